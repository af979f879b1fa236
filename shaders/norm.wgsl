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
// rowStats and IS_RMS are in norm_stats.wgsl, which precedes this file.

const HAS_BIAS : bool = {{HAS_BIAS}};

fn main(row : i32) {
  let cols = uniforms.cols;
  if (row >= uniforms.rows) {
    return;
  }
  let start = row * cols;
  let stats = rowStats(start, cols);
  let mean = stats.x;
  let rstd = stats.y;

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
