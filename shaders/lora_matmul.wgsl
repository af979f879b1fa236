// Base matmul with the LoRA term fused into its epilogue (LoraMatMulProgram):
//
//   result[m, n] = sum_k lhs[m, k] * rhs(k, n) + bias[n] + scale * dropMask[m, n] * sum_j low[m, j] * up(n, j)
//
// Forward: lhs = x, rhs = W', low = dropout(x)·Aᵀ, up(n, j) = B[n, j].
// dx:      lhs = dy, rhs = W'ᵀ, low = dxa, up(n, j) = A[j, n], dropMask = the dropout mask.
// The frozen weight is read in whichever layout it is stored in, so no transpose is materialized, and
// in whichever encoding it is held in (packed_weight.wgsl, prefixed): float32, bf16/f16 halves, int8 or NF4
// codes with their scales in rhsScale (a stand-in when the encoding has none), decoded as tiles are loaded.
//
// Each thread owns a 4×4 block of outputs strided by the workgroup size (rows ty + i·WG_Y, columns
// tx + j·WG_X), so that neighbouring threads touch neighbouring addresses in workgroup and global memory.
// A bias or mask that the program does not have is bound to a stand-in buffer and never read.

const WG_X : i32 = {{WG_X}};
const WG_Y : i32 = {{WG_Y}};
const TILE_K : i32 = {{TILE_K}};
const RHS_KN : bool = {{RHS_KN}};   // rhs stored [K, N]; else [N, K]
const UP_NR : bool = {{UP_NR}};     // up stored [N, r]; else [r, N]
const HAS_BIAS : bool = {{HAS_BIAS}};
const HAS_MASK : bool = {{HAS_MASK}};

const TILE_M : i32 = WG_Y * 4;
const TILE_N : i32 = WG_X * 4;
const WG_SIZE : i32 = WG_X * WG_Y;

var<workgroup> lhsTile : array<f32, TILE_M * TILE_K>;  // [TILE_M][TILE_K]
var<workgroup> rhsTile : array<f32, TILE_K * TILE_N>;  // [TILE_K][TILE_N]

// The frozen weight's element (k, n) of this product, read from its stored [rows, cols] layout.
fn readRhs(k : i32, n : i32) -> f32 {
  var row = n;
  var col = k;
  var cols = uniforms.dimK;
  if (RHS_KN) {
    row = k;
    col = n;
    cols = uniforms.dimN;
  }
  let flat = row * cols + col;
  let value = unpackElement(bitcast<u32>(rhs[flat / PER_WORD]), flat);
  if (SCALE_MODE == 0) {
    return value;
  }
  return value * f32(rhsScale[scaleIndexOf(row, col, flat)]);
}

fn readUp(n : i32, j : i32) -> f32 {
  if (UP_NR) {
    return up[n * uniforms.rank + j];
  }
  return up[j * uniforms.dimN + n];
}

fn main() {
  let dimM = uniforms.dimM;
  let dimN = uniforms.dimN;
  let dimK = uniforms.dimK;
  let tx = i32(localId.x);
  let ty = i32(localId.y);
  let tid = i32(localIndex);
  let m0 = i32(workgroupId.y) * TILE_M;
  let n0 = i32(workgroupId.x) * TILE_N;

  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);

  for (var k0 = 0; k0 < dimK; k0 += TILE_K) {
    // Consecutive threads load consecutive addresses of whichever layout the operand has.
    for (var e = tid; e < TILE_M * TILE_K; e += WG_SIZE) {
      let m = m0 + e / TILE_K;
      let k = k0 + e % TILE_K;
      var v = 0.0;
      if (m < dimM && k < dimK) {
        v = lhs[m * dimK + k];
      }
      lhsTile[e] = v;
    }
    for (var e = tid; e < TILE_K * TILE_N; e += WG_SIZE) {
      var kk : i32;
      var nn : i32;
      if (RHS_KN) {
        kk = e / TILE_N;
        nn = e % TILE_N;
      } else {
        nn = e / TILE_K;
        kk = e % TILE_K;
      }
      let k = k0 + kk;
      let n = n0 + nn;
      var v = 0.0;
      if (k < dimK && n < dimN) {
        v = readRhs(k, n);
      }
      rhsTile[kk * TILE_N + nn] = v;
    }
    workgroupBarrier();

    for (var kk = 0; kk < TILE_K; kk++) {
      let a = vec4<f32>(
          lhsTile[ty * TILE_K + kk],
          lhsTile[(ty + WG_Y) * TILE_K + kk],
          lhsTile[(ty + 2 * WG_Y) * TILE_K + kk],
          lhsTile[(ty + 3 * WG_Y) * TILE_K + kk]);
      let b = vec4<f32>(
          rhsTile[kk * TILE_N + tx],
          rhsTile[kk * TILE_N + tx + WG_X],
          rhsTile[kk * TILE_N + tx + 2 * WG_X],
          rhsTile[kk * TILE_N + tx + 3 * WG_X]);
      acc0 = fma(vec4<f32>(a.x), b, acc0);
      acc1 = fma(vec4<f32>(a.y), b, acc1);
      acc2 = fma(vec4<f32>(a.z), b, acc2);
      acc3 = fma(vec4<f32>(a.w), b, acc3);
    }
    workgroupBarrier();
  }

  // Epilogue. Out-of-range rows and columns read clamped (valid) addresses and are not written.
  let rows = vec4<i32>(m0 + ty) + vec4<i32>(0, WG_Y, 2 * WG_Y, 3 * WG_Y);
  let cols = vec4<i32>(n0 + tx) + vec4<i32>(0, WG_X, 2 * WG_X, 3 * WG_X);
  let rowsIn = min(rows, vec4<i32>(dimM - 1));
  let colsIn = min(cols, vec4<i32>(dimN - 1));
  let rank = uniforms.rank;

  var lora0 = vec4<f32>(0.0);
  var lora1 = vec4<f32>(0.0);
  var lora2 = vec4<f32>(0.0);
  var lora3 = vec4<f32>(0.0);
  for (var j = 0; j < rank; j++) {
    let u = vec4<f32>(readUp(colsIn.x, j), readUp(colsIn.y, j), readUp(colsIn.z, j), readUp(colsIn.w, j));
    lora0 = fma(vec4<f32>(low[rowsIn.x * rank + j]), u, lora0);
    lora1 = fma(vec4<f32>(low[rowsIn.y * rank + j]), u, lora1);
    lora2 = fma(vec4<f32>(low[rowsIn.z * rank + j]), u, lora2);
    lora3 = fma(vec4<f32>(low[rowsIn.w * rank + j]), u, lora3);
  }

  var biasRow = vec4<f32>(0.0);
  if (HAS_BIAS) {
    biasRow = vec4<f32>(bias[colsIn.x], bias[colsIn.y], bias[colsIn.z], bias[colsIn.w]);
  }
  let scale = uniforms.scale;
  writeRow(rows.x, rowsIn.x, cols, colsIn, acc0 + biasRow, scale * lora0);
  writeRow(rows.y, rowsIn.y, cols, colsIn, acc1 + biasRow, scale * lora1);
  writeRow(rows.z, rowsIn.z, cols, colsIn, acc2 + biasRow, scale * lora2);
  writeRow(rows.w, rowsIn.w, cols, colsIn, acc3 + biasRow, scale * lora3);
}

fn writeRow(m : i32, mIn : i32, cols : vec4<i32>, colsIn : vec4<i32>, base : vec4<f32>, lora : vec4<f32>) {
  let dimN = uniforms.dimN;
  if (m >= uniforms.dimM) {
    return;
  }
  var value = base + lora;
  if (HAS_MASK) {
    let rowStart = mIn * dimN;
    let keep = vec4<f32>(
        dropMask[rowStart + colsIn.x], dropMask[rowStart + colsIn.y],
        dropMask[rowStart + colsIn.z], dropMask[rowStart + colsIn.w]);
    value = base + keep * lora;
  }
  // Spelled out rather than indexed at run time, so that the vectors can stay in registers.
  let rowStart = m * dimN;
  if (cols.x < dimN) { setOutputAtIndex(rowStart + cols.x, value.x); }
  if (cols.y < dimN) { setOutputAtIndex(rowStart + cols.y, value.y); }
  if (cols.z < dimN) { setOutputAtIndex(rowStart + cols.z, value.z); }
  if (cols.w < dimN) { setOutputAtIndex(rowStart + cols.w, value.w); }
}
