// Projects a wide matrix onto the LoRA rank (LoraProjectProgram):
//
//   result[t, j] = scale * sum_k wide[t, k] * dropMask[t, k] * low(k, j)        result: [T, r]
//
// Forward: wide = x, low(k, j) = A[j, k] (LOW_RK), dropMask = dropout mask  ->  xa = dropout(x)·Aᵀ.
// Backward: wide = dy, low(k, j) = B[k, j], scale = s                       ->  dxa = s·dy·B.
//
// The output is narrow (r columns), so one thread per output would walk all of K serially. Instead each
// thread owns 4 rows × RANK_BLOCK ranks of one K lane: the WG_K lanes of a row group split K (consecutive
// lanes, consecutive k) and add their partial sums in workgroup memory at the end.

const WG_K : i32 = {{WG_K}};
const ROW_GROUPS : i32 = {{ROW_GROUPS}};
const RANK_BLOCK : i32 = {{RANK_BLOCK}};
const LOW_RK : bool = {{LOW_RK}};   // low stored [r, K]; else [K, r]
const HAS_MASK : bool = {{HAS_MASK}};

const TILE_T : i32 = ROW_GROUPS * 4;
const WG_SIZE : i32 = WG_K * ROW_GROUPS;

// partials[(group * WG_K + lane) * RANK_BLOCK + j]: a thread's sums for its 4 rows (as a vec4), rank j.
var<workgroup> partials : array<vec4<f32>, WG_SIZE * RANK_BLOCK>;

fn readLow(k : i32, j : i32) -> f32 {
  if (LOW_RK) {
    return low[j * uniforms.dimK + k];
  }
  return low[k * uniforms.rank + j];
}

fn main() {
  let dimT = uniforms.dimT;
  let dimK = uniforms.dimK;
  let rank = uniforms.rank;
  let lane = i32(localId.x);
  let group = i32(localId.y);
  let j0 = i32(workgroupId.x) * RANK_BLOCK;
  let t0 = i32(workgroupId.y) * TILE_T;
  // Rows and ranks past the end read clamped (valid) addresses; their sums are never written.
  let rowsIn = min(vec4<i32>(t0 + group * 4) + vec4<i32>(0, 1, 2, 3), vec4<i32>(dimT - 1));
  let rowStarts = rowsIn * dimK;

  var acc : array<vec4<f32>, RANK_BLOCK>;
  for (var k = lane; k < dimK; k += WG_K) {
    var w = vec4<f32>(wide[rowStarts.x + k], wide[rowStarts.y + k], wide[rowStarts.z + k], wide[rowStarts.w + k]);
    if (HAS_MASK) {
      w *= vec4<f32>(
          dropMask[rowStarts.x + k], dropMask[rowStarts.y + k], dropMask[rowStarts.z + k], dropMask[rowStarts.w + k]);
    }
    for (var j = 0; j < RANK_BLOCK; j++) {
      acc[j] = fma(w, vec4<f32>(readLow(k, min(j0 + j, rank - 1))), acc[j]);
    }
  }
  for (var j = 0; j < RANK_BLOCK; j++) {
    partials[(group * WG_K + lane) * RANK_BLOCK + j] = acc[j];
  }
  workgroupBarrier();

  let tid = i32(localIndex);
  for (var o = tid; o < TILE_T * RANK_BLOCK; o += WG_SIZE) {
    let j = o % RANK_BLOCK;
    let row = o / RANK_BLOCK;   // row within the tile
    let g = row / 4;
    var sum = 0.0;
    for (var l = 0; l < WG_K; l++) {
      sum += partials[(g * WG_K + l) * RANK_BLOCK + j][row % 4];
    }
    let t = t0 + row;
    if (t < dimT && j0 + j < rank) {
      setOutputAtIndex(t * rank + j0 + j, uniforms.scale * sum);
    }
  }
}
