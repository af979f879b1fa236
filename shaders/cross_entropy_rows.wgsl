// Row helpers shared by CrossEntropyProgram (cross_entropy.wgsl) and CrossEntropyGradProgram
// (cross_entropy_grad.wgsl), which append their entry point to this file. Both bind logits [rows, vocab]
// and targets [rows] (int32: tfjs binds an int32 tensor as array<i32>).

// The row's max and Σ exp(logit − max). Four lanes at a time: independent sums for the ALUs, and four
// partial sums round off less than one long one.
fn rowStats(start : i32, vocab : i32) -> vec2<f32> {
  let quads = vocab / 4;
  var max4 = vec4<f32>(logits[start]);
  for (var q = 0; q < quads; q++) {
    let j = start + 4 * q;
    max4 = max(max4, vec4<f32>(logits[j], logits[j + 1], logits[j + 2], logits[j + 3]));
  }
  var rowMax = max(max(max4.x, max4.y), max(max4.z, max4.w));
  for (var j = start + 4 * quads; j < start + vocab; j++) {
    rowMax = max(rowMax, logits[j]);
  }
  var sum4 = vec4<f32>(0.0);
  for (var q = 0; q < quads; q++) {
    let j = start + 4 * q;
    sum4 += exp(vec4<f32>(logits[j], logits[j + 1], logits[j + 2], logits[j + 3]) - rowMax);
  }
  var sum = (sum4.x + sum4.y) + (sum4.z + sum4.w);
  for (var j = start + 4 * quads; j < start + vocab; j++) {
    sum += exp(logits[j] - rowMax);
  }
  return vec2<f32>(rowMax, sum);
}

// A target outside [0, vocab) is the caller's bug; clamped, it reads a valid logit instead of another row.
fn targetOf(row : i32, vocab : i32) -> i32 {
  return clamp(targets[row], 0, vocab - 1);
}
