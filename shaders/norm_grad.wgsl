// The input gradient of LayerNorm / RMSNorm (NormGradProgram), for a frozen weight and bias:
//
//   x̂ = the normalized row before the affine part, rstd = 1 / sqrt(var + eps), g = dy * weight, C = row length
//   layer: dx = rstd * (g - mean_c(g) - x̂ * mean_c(g * x̂))
//   rms:   dx = rstd * (g - x̂ * mean_c(g * x̂))
//
// mean and rstd are recomputed from x (cheap: one thread per row) rather than saved by the forward pass.
// As in norm.wgsl, one thread walks one row in registers: no workgroup memory, no barrier; flat dispatch.
// rowStats and IS_RMS are in norm_stats.wgsl, which precedes this file.

fn main(row : i32) {
  let cols = uniforms.cols;
  if (row >= uniforms.rows) {
    return;
  }
  let start = row * cols;
  let invCols = 1.0 / f32(cols);
  let stats = rowStats(start, cols);
  let mean = stats.x;
  let rstd = stats.y;

  var sumG = 0.0;
  var sumGXhat = 0.0;
  for (var c = 0; c < cols; c++) {
    let g = dy[start + c] * weight[c];
    let xhat = (x[start + c] - mean) * rstd;
    sumG += g;
    sumGXhat = fma(g, xhat, sumGXhat);
  }
  var meanG = 0.0;
  if (!IS_RMS) {
    meanG = sumG * invCols;
  }
  let meanGXhat = sumGXhat * invCols;

  for (var c = 0; c < cols; c++) {
    let g = dy[start + c] * weight[c];
    let xhat = (x[start + c] - mean) * rstd;
    setOutputAtIndex(start + c, rstd * (g - meanG - xhat * meanGXhat));
  }
}
