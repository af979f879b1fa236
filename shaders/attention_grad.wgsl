// Causal self-attention, backward (AttentionGradProgram): dq, dk and dv in one dispatch.
//
//   p[t, j]  = exp(scale * q[t] · k[j] - lse[t])          (stats from attention_stats.wgsl)
//   ds[t, j] = p[t, j] * (dOut[t] · v[j] - delta[t])
//   dq[t]    = scale * sum_j ds[t, j] * k[j]
//   dk[j]    = scale * sum_t ds[t, j] * q[t]              over the query heads of kv head g
//   dv[j]    = sum_t p[t, j] * dOut[t]                    over the query heads of kv head g
//
// The output is the gradient of qkv, in qkv's packed layout. Threads 0 .. rows·heads-1 each own one
// (query token, head) and sum over its visible keys; the next rows·kvHeads threads each own one
// (key token, kv head) and sum over the queries that see it, in every head of its group. Both kinds
// recompute p from the saved statistics rather than reading a [seq, seq] matrix, so nothing of size
// seq² is ever stored and no thread waits on another (no barriers, no atomics).
// Layouts, heads and visibility as in attention_common.wgsl, which precedes this file.

fn main(index : i32) {
  let heads = uniforms.heads;
  let kvHeads = uniforms.kvHeads;
  let rows = uniforms.rows;
  let seq = uniforms.seq;
  let group = heads / kvHeads;
  let scale = uniforms.scale;

  if (index < rows * heads) {
    // dq for query token `row`, head h.
    let row = index / heads;
    let h = index % heads;
    let t = row % seq;
    let seqStart = row - t;
    let g = h / group;
    let oBase = perQueryAt(row, h);
    var query : array<f32, HEAD_DIM>;
    var grad : array<f32, HEAD_DIM>;
    loadQuery(&query, row, h);
    let lse = stats[2 * index];
    let delta = stats[2 * index + 1];
    for (var j = firstVisibleKey(t); j <= t; j++) {
      let kBase = keyAt(seqStart + j, g);
      let vBase = valueAt(seqStart + j, g);
      let p = exp(score(&query, kBase) - lse);
      var dp = 0.0;
      for (var d = 0; d < HEAD_DIM; d++) {
        dp = fma(dOut[oBase + d], qkv[vBase + d], dp);
      }
      let ds = p * (dp - delta);
      for (var d = 0; d < HEAD_DIM; d++) {
        grad[d] = fma(ds, qkv[kBase + d], grad[d]);
      }
    }
    let outBase = queryAt(row, h);
    for (var d = 0; d < HEAD_DIM; d++) {
      setOutputAtIndex(outBase + d, scale * grad[d]);
    }
    return;
  }

  let kvIndex = index - rows * heads;
  if (kvIndex >= rows * kvHeads) {
    return;
  }
  // dk and dv for key token `row`, kv head g.
  let row = kvIndex / kvHeads;
  let g = kvIndex % kvHeads;
  let j = row % seq;
  let seqStart = row - j;
  let kBase = keyAt(row, g);
  let vBase = valueAt(row, g);
  let last = lastQuerySeeing(j, seq);
  var key : array<f32, HEAD_DIM>;
  var value : array<f32, HEAD_DIM>;
  var gradK : array<f32, HEAD_DIM>;
  var gradV : array<f32, HEAD_DIM>;
  for (var d = 0; d < HEAD_DIM; d++) {
    key[d] = qkv[kBase + d];
    value[d] = qkv[vBase + d];
  }
  for (var h = g * group; h < (g + 1) * group; h++) {
    for (var t = j; t <= last; t++) {
      let qRow = seqStart + t;
      let qBase = queryAt(qRow, h);
      let oBase = perQueryAt(qRow, h);
      let statIndex = 2 * (qRow * heads + h);
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0; d < HEAD_DIM; d++) {
        s = fma(qkv[qBase + d], key[d], s);
        dp = fma(dOut[oBase + d], value[d], dp);
      }
      let p = exp(scale * s - stats[statIndex]);
      let ds = p * (dp - stats[statIndex + 1]);
      for (var d = 0; d < HEAD_DIM; d++) {
        gradV[d] = fma(p, dOut[oBase + d], gradV[d]);
        gradK[d] = fma(ds, qkv[qBase + d], gradK[d]);
      }
    }
  }
  for (var d = 0; d < HEAD_DIM; d++) {
    setOutputAtIndex(kBase + d, scale * gradK[d]);
    setOutputAtIndex(vBase + d, gradV[d]);
  }
}
