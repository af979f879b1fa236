// Per-query statistics for the attention backward pass (AttentionStatsProgram):
//
//   stats[t, h] = (logsumexp_j(scale * q[t, h] · k[j, g]),  sum_d dOut[t, h, d] * attnOut[t, h, d])
//
// Layouts as in attention.wgsl; stats is [rows, heads, 2]. With them, every probability
// p[t, j] = exp(score - lse[t]) and every softmax gradient p·(dp - delta[t]) can be recomputed where the
// gradient kernel needs it, including by the threads that own a key rather than a query.
// One thread per (token, head).

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
  var delta = 0.0;
  for (var d = 0; d < HEAD_DIM; d++) {
    query[d] = queries[qBase + d] * uniforms.scale;
    delta = fma(dOut[qBase + d], attnOut[qBase + d], delta);
  }

  var maxScore = -3.0e38;
  var sum = 0.0;
  for (var j = visibleFrom(t); j <= t; j++) {
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
  setOutputAtIndex(2 * index, maxScore + log(sum));
  setOutputAtIndex(2 * index + 1, delta);
}
