// Pointwise activation, forward (ActivationProgram): result[i] = f(x[i]) over the flattened tensor,
// one thread per element. f is activate() of activation_math.wgsl, which precedes this file.

fn main(index : i32) {
  if (index < uniforms.size) {
    setOutputAtIndex(index, activate(x[index]));
  }
}
