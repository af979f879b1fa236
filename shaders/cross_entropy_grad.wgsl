// Gradient of the weighted NLL with respect to the logits (CrossEntropyGradProgram):
//
//   result[i, j] = (softmax(logits[i, :])[j] − (j == targets[i])) · weights[i] · dy
//
// dy, the scalar upstream gradient, is read from its buffer (dy[0]) and never goes through JS.
// One thread per row: the row's max and exp-sum are recomputed (rowStats and targetOf of
// cross_entropy_rows.wgsl, which precedes this file), then the row is written.

fn main(row : i32) {
  if (row >= uniforms.rows) {
    return;
  }
  let vocab = uniforms.vocab;
  let start = row * vocab;
  let stats = rowStats(start, vocab);
  let scale = weights[row] * dy[0];
  let probScale = scale / stats.y;
  let targetIndex = targetOf(row, vocab);
  for (var j = 0; j < vocab; j++) {
    var g = probScale * exp(logits[start + j] - stats.x);
    if (j == targetIndex) {
      g -= scale;
    }
    setOutputAtIndex(start + j, g);
  }
}
