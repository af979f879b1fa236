// Pointwise activation, backward (ActivationGradProgram): result[i] = dy[i]·f'(x[i]) over the flattened
// tensors, one thread per element. f' is activateGrad() of activation_math.wgsl, which precedes this
// file; it is recomputed from x, so the forward pass saves nothing but its input.

fn main(index : i32) {
  if (index < uniforms.size) {
    setOutputAtIndex(index, dy[index] * activateGrad(x[index]));
  }
}
