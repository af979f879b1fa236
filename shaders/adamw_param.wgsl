// The AdamW parameter update, elementwise (AdamWParamProgram), with the new moments m and v:
//
//   result = p * decay - (m / (sqrt(v) / bc2Sqrt + eps)) * stepSize
//
// decay = 1 - lr * weight_decay, stepSize = lr / (1 - beta1^t), bc2Sqrt = sqrt(1 - beta2^t): PyTorch's
// AdamW, with eps added after the bias correction of sqrt(v).

fn main(index : i32) {
  if (index >= uniforms.size) {
    return;
  }
  let denom = sqrt(v[index]) / uniforms.bc2Sqrt + uniforms.eps;
  setOutputAtIndex(index, p[index] * uniforms.decay - (m[index] / denom) * uniforms.stepSize);
}
