// Weighted negative log-likelihood per row, forward (CrossEntropyProgram):
//
//   result[i] = weights[i] * (logsumexp(logits[i, :]) - logits[i, targets[i]])       logits: [rows, vocab]
//
// One thread per row, looping over the row in registers: no workgroup memory and no barriers, which
// cost tens of ms per reduction on SwiftShader. The logsumexp is shifted by the row max, so large
// logits cannot overflow. The caller sums the rows. rowStats and targetOf are in
// cross_entropy_rows.wgsl, which precedes this file.

fn main(row : i32) {
  if (row >= uniforms.rows) {
    return;
  }
  let vocab = uniforms.vocab;
  let start = row * vocab;
  let stats = rowStats(start, vocab);
  let logSumExp = stats.x + log(stats.y);
  setOutputAtIndex(row, weights[row] * (logSumExp - logits[start + targetOf(row, vocab)]));
}
