// LayerNorm / RMSNorm over the rows of x (NormProgram), C = the row length:
//
//   layer: result[r, c] = (x[r, c] - mean_r) * rstd_r * weight[c] + bias[c]
//          mean_r = sum_c x[r, c] / C,  rstd_r = 1 / sqrt(sum_c (x[r, c] - mean_r)² / C + eps)
//   rms:   result[r, c] = weight[c] * (x[r, c] * rstd_r),  rstd_r = 1 / sqrt(sum_c x[r, c]² / C + eps)
//
// (biased variance, as torch.nn.LayerNorm; the products in the order of the stock-op composition.)
// One thread per row: it walks its row's columns in registers, so there is no workgroup memory and no
// barrier (barriers are very expensive on SwiftShader). The dispatch is flat over rows.
// A bias the program does not have is bound to a stand-in buffer and never read.

const IS_RMS : bool = {{IS_RMS}};
const HAS_BIAS : bool = {{HAS_BIAS}};

fn main(row : i32) {
  let cols = uniforms.cols;
  if (row >= uniforms.rows) {
    return;
  }
  let start = row * cols;
  let invCols = 1.0 / f32(cols);

  var mean = 0.0;
  if (!IS_RMS) {
    var sum = 0.0;
    for (var c = 0; c < cols; c++) {
      sum += x[start + c];
    }
    mean = sum * invCols;
  }
  // Two passes rather than E[x²] - E[x]², which loses digits when the mean is large.
  var squares = 0.0;
  for (var c = 0; c < cols; c++) {
    let d = x[start + c] - mean;
    squares = fma(d, d, squares);
  }
  let rstd = inverseSqrt(squares * invCols + uniforms.eps);

  for (var c = 0; c < cols; c++) {
    var value : f32;
    if (IS_RMS) {
      value = weight[c] * (x[start + c] * rstd);
    } else {
      value = (x[start + c] - mean) * rstd * weight[c];
      if (HAS_BIAS) {
        value += bias[c];
      }
    }
    setOutputAtIndex(start + c, value);
  }
}
