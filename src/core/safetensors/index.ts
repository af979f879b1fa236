/**
 * Reader/validator and writer for the Hugging Face safetensors format:
 * 8-byte little-endian header length, a UTF-8 JSON header, then the tensors' raw little-endian bytes.
 * DOM-free and dependency-free: runs in the browser, in workers and in Node.
 */
export { type Dtype, BYTES_PER_ELEMENT, toFloat32 } from './dtype';
export { type ByteSource, bytesSource, blobSource } from './source';
export { type TensorEntry, type SafetensorsHeader, type SkippedTensorEntry, readHeader, readTensorBytes } from './read';
export { type TensorToWrite, type TensorLayoutEntry, type SafetensorsLayout, safetensorsLayout, writeSafetensors } from './write';
export { fromFloat32 } from './encode';
export { FiniteScan, firstNonFinite } from './finite';
