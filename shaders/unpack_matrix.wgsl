// A packed frozen matrix as float32 (UnpackMatrixProgram), for the stock-tfjs paths that need plain
// values: result[flat] = element flat of the stored [rows, cols] matrix, decoded as packed_weight.wgsl
// (prefixed) reads it. One thread per element.

fn main(index : i32) {
  if (index >= uniforms.size) {
    return;
  }
  var value = unpackElement(bitcast<u32>(words[index / PER_WORD]), index);
  if (SCALE_MODE != 0) {
    let cols = uniforms.cols;
    value = value * f32(scales[scaleIndexOf(index / cols, index % cols, index)]);
  }
  setOutputAtIndex(index, value);
}
