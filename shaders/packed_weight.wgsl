// Decoding a frozen matrix that may be held packed (src/core/weights/packed.ts), shared by every program
// that reads one: the matmul's rhs, the embedding gather, the unpacking fallback. Elements are numbered
// row-major over the stored shape; element `flat` sits in word flat / PER_WORD, filled from the low bits.

const PACK_FORMAT : i32 = {{PACK_FORMAT}};  // 0 float32, 1 bf16, 2 f16, 3 int8, 4 nf4
const PER_WORD : i32 = {{PER_WORD}};
const SCALE_MODE : i32 = {{SCALE_MODE}};    // 0 none, 1 per stored row, 2 per stored column, 3 per block of 64

// QLoRA's NF4 code book (src/core/weights/nf4.ts); private, so that it can be indexed at run time.
var<private> NF4_CODE_BOOK : array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0);

// Element `flat` of its word, before any scale. The word is the raw 32 bits whatever the binding's type.
fn unpackElement(word : u32, flat : i32) -> f32 {
  let slot = u32(flat % PER_WORD);
  if (PACK_FORMAT == 1) {
    // bf16 is the top half of a float32.
    return bitcast<f32>((word >> (16u * slot)) << 16u);
  }
  if (PACK_FORMAT == 2) {
    return unpack2x16float(word)[slot];
  }
  if (PACK_FORMAT == 3) {
    // Shift the byte to the top, then back down arithmetically: sign-extended.
    return f32(bitcast<i32>(word << (24u - 8u * slot)) >> 24u);
  }
  if (PACK_FORMAT == 4) {
    return NF4_CODE_BOOK[(word >> (4u * slot)) & 15u];
  }
  return bitcast<f32>(word);
}

// Which scale multiplies element (row, col) = flat; only called when SCALE_MODE is not 0. Consumers read
// the scale through f32(...), so that the stand-in bound when there are no scales may be any tensor.
fn scaleIndexOf(row : i32, col : i32, flat : i32) -> i32 {
  if (SCALE_MODE == 1) {
    return row;
  }
  if (SCALE_MODE == 2) {
    return col;
  }
  return flat / 64;
}
