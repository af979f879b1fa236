// Embedding lookup (GatherRowsProgram): result[t, c] = table[ids[t], c], one thread per output element,
// the table decoded as packed_weight.wgsl (prefixed) reads it. An id outside the table gives zeros.

fn main(index : i32) {
  if (index >= uniforms.size) {
    return;
  }
  let cols = uniforms.cols;
  let row = ids[index / cols];
  let col = index % cols;
  var value = 0.0;
  if (row >= 0 && row < uniforms.rows) {
    let flat = row * cols + col;
    value = unpackElement(bitcast<u32>(table[flat / PER_WORD]), flat);
    if (SCALE_MODE != 0) {
      value = value * f32(tableScale[scaleIndexOf(row, col, flat)]);
    }
  }
  setOutputAtIndex(index, value);
}
