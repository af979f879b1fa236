// One AdamW moment update, elementwise (AdamWMomentProgram):
//
//   first moment  (SQUARE false): result = beta * state + (1 - beta) * g
//   second moment (SQUARE true):  result = beta * state + (1 - beta) * g²
//
// over the flattened variable. The products are in the order of the stock-op composition in
// kernels/optimizer.ts, and 1 - beta comes rounded from the host as it does there, so the two paths
// agree to rounding.

const SQUARE : bool = {{SQUARE}};

fn main(index : i32) {
  if (index >= uniforms.size) {
    return;
  }
  let g = grad[index];
  var term = g;
  if (SQUARE) {
    term = g * g;
  }
  setOutputAtIndex(index, state[index] * uniforms.beta + term * uniforms.oneMinusBeta);
}
