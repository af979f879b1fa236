// Shared by the three attention programs (AttentionProgram, AttentionStatsProgram,
// AttentionGradProgram), which append their entry point to this file. Layouts, token-major as the
// projections produce them: q [rows, heads·HEAD_DIM], k and v [rows, kvHeads·HEAD_DIM], rows = batch·seq.
// Query head h reads kv head g = h / (heads / kvHeads) (grouped-query attention). Key j is visible from
// query t of the same sequence when 0 <= t - j < windowSize (windowSize 0: no limit).

const HEAD_DIM : i32 = {{HEAD_DIM}};

// The first key visible from query position t (the last is t itself).
fn firstVisibleKey(t : i32) -> i32 {
  if (uniforms.windowSize > 0) {
    return max(0, t - uniforms.windowSize + 1);
  }
  return 0;
}

// The last query position that sees key position j in a sequence of seq.
fn lastQuerySeeing(j : i32, seq : i32) -> i32 {
  if (uniforms.windowSize > 0) {
    return min(seq - 1, j + uniforms.windowSize - 1);
  }
  return seq - 1;
}

// scale·q · k[j] for the (already scaled) query in registers and the key starting at kBase.
fn score(query : ptr<function, array<f32, HEAD_DIM>>, kBase : i32) -> f32 {
  var s = 0.0;
  for (var d = 0; d < HEAD_DIM; d++) {
    s = fma((*query)[d], keys[kBase + d], s);
  }
  return s;
}

// The softmax normaliser of a query's scores over its visible keys, as (max, sum of exp(score - max)),
// in one pass: the sum is rescaled whenever the max grows. Key t itself is always visible, so sum >= 1.
fn softmaxStats(query : ptr<function, array<f32, HEAD_DIM>>, t : i32, seqStart : i32, g : i32) -> vec2<f32> {
  let kvStride = uniforms.kvHeads * HEAD_DIM;
  var maxScore = -3.0e38;
  var sum = 0.0;
  for (var j = firstVisibleKey(t); j <= t; j++) {
    let s = score(query, (seqStart + j) * kvStride + g * HEAD_DIM);
    if (s > maxScore) {
      sum = sum * exp(maxScore - s) + 1.0;
      maxScore = s;
    } else {
      sum += exp(s - maxScore);
    }
  }
  return vec2<f32>(maxScore, sum);
}
