// Causal self-attention, forward (AttentionProgram):
//
//   out[t, h] = sum_j softmax_j(scale * q[t, h] · k[j, g]) * v[j, g]     over keys j visible from t
//
// out is [rows, heads·HEAD_DIM], ready for the output projection. One thread per (token, head), no
// workgroup memory: the scores of one query are at most seq long, so a thread walks its keys twice
// (the softmax normaliser, then the weighted values) instead of materialising the [seq, seq] score
// matrix that stock tfjs builds, masks, soft-maxes and multiplies in five dispatches.
// Layouts, heads and visibility as in attention_common.wgsl, which precedes this file.

fn main(index : i32) {
  let heads = uniforms.heads;
  if (index >= uniforms.rows * heads) {
    return;
  }
  let row = index / heads;
  let h = index % heads;
  let t = row % uniforms.seq;
  let seqStart = row - t;
  let g = h / (heads / uniforms.kvHeads);

  var query : array<f32, HEAD_DIM>;
  loadQuery(&query, row, h);
  let stats = softmaxStats(&query, t, seqStart, g);
  let invSum = 1.0 / stats.y;

  var acc : array<f32, HEAD_DIM>;
  for (var j = firstVisibleKey(t); j <= t; j++) {
    let p = exp(score(&query, keyAt(seqStart + j, g)) - stats.x) * invSum;
    let vBase = valueAt(seqStart + j, g);
    for (var d = 0; d < HEAD_DIM; d++) {
      acc[d] = fma(p, qkv[vBase + d], acc[d]);
    }
  }
  let outBase = perQueryAt(row, h);
  for (var d = 0; d < HEAD_DIM; d++) {
    setOutputAtIndex(outBase + d, acc[d]);
  }
}
