// Shared by NormProgram (norm.wgsl) and NormGradProgram (norm_grad.wgsl), which append their entry point
// to this file: the statistics of one row of x [rows, cols].

const IS_RMS : bool = {{IS_RMS}};

// (mean, rstd) of the row starting at `start`: rstd = 1 / sqrt(sum_c (x - mean)² / cols + eps), biased
// as torch.nn.LayerNorm; for RMSNorm the mean is 0. Two passes rather than E[x²] - E[x]², which loses
// digits when the mean is large.
fn rowStats(start : i32, cols : i32) -> vec2<f32> {
  let invCols = 1.0 / f32(cols);
  var mean = 0.0;
  if (!IS_RMS) {
    var sum = 0.0;
    for (var c = 0; c < cols; c++) {
      sum += x[start + c];
    }
    mean = sum * invCols;
  }
  var squares = 0.0;
  for (var c = 0; c < cols; c++) {
    let d = x[start + c] - mean;
    squares = fma(d, d, squares);
  }
  return vec2<f32>(mean, inverseSqrt(squares * invCols + uniforms.eps));
}
