// Per-query statistics for the attention backward pass (AttentionStatsProgram):
//
//   stats[t, h] = (logsumexp_j(scale * q[t, h] · k[j, g]),  sum_d dOut[t, h, d] * attnOut[t, h, d])
//
// stats is [rows, heads, 2]. With them, every probability p[t, j] = exp(score - lse[t]) and every softmax
// gradient p·(dp - delta[t]) can be recomputed where the gradient kernel needs it, including by the
// threads that own a key rather than a query. One thread per (token, head); layouts, heads and
// visibility as in attention_common.wgsl, which precedes this file.

fn main(index : i32) {
  let heads = uniforms.heads;
  if (index >= uniforms.rows * heads) {
    return;
  }
  let row = index / heads;
  let h = index % heads;
  let t = row % uniforms.seq;
  let g = h / (heads / uniforms.kvHeads);

  var query : array<f32, HEAD_DIM>;
  loadQuery(&query, row, h);
  let oBase = perQueryAt(row, h);
  var delta = 0.0;
  for (var d = 0; d < HEAD_DIM; d++) {
    delta = fma(dOut[oBase + d], attnOut[oBase + d], delta);
  }
  let stats = softmaxStats(&query, t, row - t, g);
  setOutputAtIndex(2 * index, stats.x + log(stats.y));
  setOutputAtIndex(2 * index + 1, delta);
}
