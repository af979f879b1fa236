// Causal self-attention, forward (AttentionProgram):
//
//   out[t, h] = sum_j softmax_j(scale * q[t, h] · k[j, g]) * v[j, g]     over keys j visible from t
//
// q [rows, heads·HEAD_DIM], k and v [rows, kvHeads·HEAD_DIM], out [rows, heads·HEAD_DIM], rows = batch·seq,
// token-major as the projections produce them (no head transposes). Query head h reads kv head
// g = h / (heads / kvHeads) (grouped-query attention). Key j is visible from query t of the same sequence
// when 0 <= t - j < windowSize (windowSize 0: no limit).
//
// One thread per (token, head), no workgroup memory: the scores of one query are at most seq long, so a
// thread walks its keys twice (max and sum, then the weighted values) instead of materialising the
// [seq, seq] score matrix that stock tfjs builds, masks, soft-maxes and multiplies in five dispatches.

const HEAD_DIM : i32 = {{HEAD_DIM}};

fn visibleFrom(t : i32) -> i32 {
  if (uniforms.windowSize > 0) {
    return max(0, t - uniforms.windowSize + 1);
  }
  return 0;
}

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
  let kvStride = uniforms.kvHeads * HEAD_DIM;

  var query : array<f32, HEAD_DIM>;
  let qBase = row * heads * HEAD_DIM + h * HEAD_DIM;
  for (var d = 0; d < HEAD_DIM; d++) {
    query[d] = queries[qBase + d] * uniforms.scale;
  }

  // Pass 1: the running max and the sum of exp(score - max).
  let first = visibleFrom(t);
  var maxScore = -3.0e38;
  var sum = 0.0;
  for (var j = first; j <= t; j++) {
    let kBase = (seqStart + j) * kvStride + g * HEAD_DIM;
    var s = 0.0;
    for (var d = 0; d < HEAD_DIM; d++) {
      s = fma(query[d], keys[kBase + d], s);
    }
    if (s > maxScore) {
      sum = sum * exp(maxScore - s) + 1.0;
      maxScore = s;
    } else {
      sum += exp(s - maxScore);
    }
  }

  // Pass 2: the probability-weighted values. Key t itself is always visible, so sum >= 1.
  var acc : array<f32, HEAD_DIM>;
  let invSum = 1.0 / sum;
  for (var j = first; j <= t; j++) {
    let kBase = (seqStart + j) * kvStride + g * HEAD_DIM;
    var s = 0.0;
    for (var d = 0; d < HEAD_DIM; d++) {
      s = fma(query[d], keys[kBase + d], s);
    }
    let p = exp(s - maxScore) * invSum;
    for (var d = 0; d < HEAD_DIM; d++) {
      acc[d] = fma(p, values[kBase + d], acc[d]);
    }
  }
  for (var d = 0; d < HEAD_DIM; d++) {
    setOutputAtIndex(qBase + d, acc[d]);
  }
}
