// Shared by the three attention programs (AttentionProgram, AttentionStatsProgram,
// AttentionGradProgram), which append their entry point to this file.
//
// The input is one packed tensor qkv [rows, (heads + 2·kvHeads)·HEAD_DIM], rows = batch·seq: per token
// the query heads, then the key heads, then the value heads, as GPT-2's c_attn produces them (Llama
// concatenates its three projections). Query head h reads kv head g = h / (heads / kvHeads)
// (grouped-query attention). Key j is visible from query t of the same sequence when
// 0 <= t - j < windowSize (windowSize 0: no limit). Per-query tensors (the output, its gradient) are
// [rows, heads·HEAD_DIM].

const HEAD_DIM : i32 = {{HEAD_DIM}};

fn qkvRowStride() -> i32 {
  return (uniforms.heads + 2 * uniforms.kvHeads) * HEAD_DIM;
}

// Where query head h, key head g and value head g of token `row` start in qkv (and in its gradient).
fn queryAt(row : i32, h : i32) -> i32 {
  return row * qkvRowStride() + h * HEAD_DIM;
}

fn keyAt(row : i32, g : i32) -> i32 {
  return row * qkvRowStride() + (uniforms.heads + g) * HEAD_DIM;
}

fn valueAt(row : i32, g : i32) -> i32 {
  return row * qkvRowStride() + (uniforms.heads + uniforms.kvHeads + g) * HEAD_DIM;
}

// Where head h of token `row` starts in a per-query tensor [rows, heads·HEAD_DIM].
fn perQueryAt(row : i32, h : i32) -> i32 {
  return (row * uniforms.heads + h) * HEAD_DIM;
}

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

// scale·q · k for the (already scaled) query in registers and the key starting at kBase in qkv.
fn score(query : ptr<function, array<f32, HEAD_DIM>>, kBase : i32) -> f32 {
  var s = 0.0;
  for (var d = 0; d < HEAD_DIM; d++) {
    s = fma((*query)[d], qkv[kBase + d], s);
  }
  return s;
}

// The softmax normaliser of a query's scores over its visible keys, as (max, sum of exp(score - max)),
// in one pass: the sum is rescaled whenever the max grows. Key t itself is always visible, so sum >= 1.
fn softmaxStats(query : ptr<function, array<f32, HEAD_DIM>>, t : i32, seqStart : i32, g : i32) -> vec2<f32> {
  var maxScore = -3.0e38;
  var sum = 0.0;
  for (var j = firstVisibleKey(t); j <= t; j++) {
    let s = score(query, keyAt(seqStart + j, g));
    if (s > maxScore) {
      sum = sum * exp(maxScore - s) + 1.0;
      maxScore = s;
    } else {
      sum += exp(s - maxScore);
    }
  }
  return vec2<f32>(maxScore, sum);
}

// The (already scaled) query of head h of token `row`, into registers.
fn loadQuery(query : ptr<function, array<f32, HEAD_DIM>>, row : i32, h : i32) {
  let base = queryAt(row, h);
  for (var d = 0; d < HEAD_DIM; d++) {
    (*query)[d] = qkv[base + d] * uniforms.scale;
  }
}
