import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import code from '../../../shaders/gather_rows.wgsl?raw';
import { encodingConstants, PACKED_WEIGHT_WGSL, type MatrixEncoding } from './packed_weight_webgpu';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

const WORKGROUP = 64;

/**
 * Rows of a frozen table by id, decoded from however the table is held. Inputs: ids (int32 [T]),
 * table (values or packed words), tableScale (its scales, or a float32 stand-in). Output [T, cols].
 */
export class GatherRowsProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0, 1] };
  dispatch: [number, number, number];
  variableNames = ['ids', 'table', 'tableScale'];
  uniforms = 'rows : i32, cols : i32,';
  size = true;
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(params: { tokens: number; rows: number; cols: number; encoding: MatrixEncoding }) {
    const { tokens, rows, cols } = params;
    this.constants = encodingConstants(params.encoding);
    this.outputShape = [tokens, cols];
    this.dispatch = [Math.ceil((tokens * cols) / WORKGROUP), 1, 1];
    this.shaderKey = `gatherRows_${constantsKey(this.constants)}`;
    this.uniformData = [
      { type: 'int32', data: [rows] },
      { type: 'int32', data: [cols] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(`${PACKED_WEIGHT_WGSL}\n${code}`, this.constants);
  }
}
