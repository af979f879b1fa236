// Sums outer products over the token dimension (LoraTokenReduceProgram):
//
//   result(p, j) = scale * sum_t wide[t, p] * dropMask[t, p] * low[t, j]       wide: [T, P], low: [T, r]
//
// dB = s·dyᵀ·xa:          wide = dy, low = xa, scale = s, stored [P, r] (OUT_PR).
// dA = dxaᵀ·dropout(x):   wide = x, low = dxa, dropMask = dropout mask, stored [r, P].
//
// T is the long dimension (tokens) and r may be 1, so one thread per output would leave most of the GPU
// idle and walk T serially. Instead a workgroup owns 4·WG_P columns × RANK_BLOCK ranks; its WG_T rows of
// threads stride over T (consecutive threads read consecutive columns of one token), and the WG_T partial
// sums meet in workgroup memory. No split-T second pass, so the whole gradient is one dispatch.

const WG_P : i32 = {{WG_P}};
const WG_T : i32 = {{WG_T}};
const RANK_BLOCK : i32 = {{RANK_BLOCK}};
const OUT_PR : bool = {{OUT_PR}};   // result stored [P, r]; else [r, P]
const HAS_MASK : bool = {{HAS_MASK}};

const TILE_P : i32 = WG_P * 4;
const WG_SIZE : i32 = WG_P * WG_T;

// partials[(ty * WG_P + tx) * RANK_BLOCK + j] holds a thread's sums for its 4 columns (as a vec4), rank j.
var<workgroup> partials : array<vec4<f32>, WG_SIZE * RANK_BLOCK>;

fn main() {
  let dimT = uniforms.dimT;
  let dimP = uniforms.dimP;
  let rank = uniforms.rank;
  let tx = i32(localId.x);
  let ty = i32(localId.y);
  let p0 = i32(workgroupId.x) * TILE_P;
  let j0 = i32(workgroupId.y) * RANK_BLOCK;
  // Columns and ranks past the end read clamped (valid) addresses; their sums are never written.
  let colsIn = min(vec4<i32>(p0 + tx) + vec4<i32>(0, WG_P, 2 * WG_P, 3 * WG_P), vec4<i32>(dimP - 1));

  var acc : array<vec4<f32>, RANK_BLOCK>;
  for (var t = ty; t < dimT; t += WG_T) {
    let rowStart = t * dimP;
    var w = vec4<f32>(
        wide[rowStart + colsIn.x], wide[rowStart + colsIn.y], wide[rowStart + colsIn.z], wide[rowStart + colsIn.w]);
    if (HAS_MASK) {
      w *= vec4<f32>(
          dropMask[rowStart + colsIn.x], dropMask[rowStart + colsIn.y],
          dropMask[rowStart + colsIn.z], dropMask[rowStart + colsIn.w]);
    }
    let lowStart = t * rank;
    for (var j = 0; j < RANK_BLOCK; j++) {
      acc[j] = fma(w, vec4<f32>(low[lowStart + min(j0 + j, rank - 1)]), acc[j]);
    }
  }
  // Tree-add the WG_T rows of partial sums: log2(WG_T) steps, no thread walks all of them.
  let me = (ty * WG_P + tx) * RANK_BLOCK;
  for (var j = 0; j < RANK_BLOCK; j++) {
    partials[me + j] = acc[j];
  }
  workgroupBarrier();
  for (var half = WG_T / 2; half > 0; half /= 2) {
    if (ty < half) {
      let partner = ((ty + half) * WG_P + tx) * RANK_BLOCK;
      for (var j = 0; j < RANK_BLOCK; j++) {
        acc[j] += partials[partner + j];
        partials[me + j] = acc[j];
      }
    }
    workgroupBarrier();
  }
  if (ty != 0) {
    return;
  }
  for (var j = 0; j < RANK_BLOCK; j++) {
    let sums = uniforms.scale * acc[j];
    let jj = j0 + j;
    writeSum(p0 + tx, jj, sums.x);
    writeSum(p0 + tx + WG_P, jj, sums.y);
    writeSum(p0 + tx + 2 * WG_P, jj, sums.z);
    writeSum(p0 + tx + 3 * WG_P, jj, sums.w);
  }
}

fn writeSum(p : i32, j : i32, value : f32) {
  if (p >= uniforms.dimP || j >= uniforms.rank) {
    return;
  }
  if (OUT_PR) {
    setOutputAtIndex(p * uniforms.rank + j, value);
  } else {
    setOutputAtIndex(j * uniforms.dimP + p, value);
  }
}
