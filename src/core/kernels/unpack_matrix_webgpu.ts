import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import code from '../../../shaders/unpack_matrix.wgsl?raw';
import { encodingConstants, PACKED_WEIGHT_WGSL, type MatrixEncoding } from './packed_weight_webgpu';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

const WORKGROUP = 64;

/** A packed matrix's elements as float32 [rows·cols]. Inputs: words, scales (or a float32 stand-in). */
export class UnpackMatrixProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  variableNames = ['words', 'scales'];
  uniforms = 'cols : i32,';
  size = true;
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(params: { rows: number; cols: number; encoding: MatrixEncoding }) {
    const { rows, cols } = params;
    this.constants = encodingConstants(params.encoding);
    this.outputShape = [rows * cols];
    this.dispatch = [Math.ceil((rows * cols) / WORKGROUP), 1, 1];
    this.shaderKey = `unpackMatrix_${constantsKey(this.constants)}`;
    this.uniformData = [{ type: 'int32', data: [cols] }];
  }

  getUserCode(): string {
    return fillWgsl(`${PACKED_WEIGHT_WGSL}\n${code}`, this.constants);
  }
}
