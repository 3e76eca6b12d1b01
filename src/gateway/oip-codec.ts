// Open Inference Protocol v2 (KServe / Triton) request validation and response
// encoding, for JSON and MessagePack bodies of the same shape. Validation
// errors name the field and carry a stable FW_ERR code.

import { Packr } from 'msgpackr'
import type { ModelConfig } from '../control-plane/config-types.js'
import { fwError } from '../errors.js'

export interface InferRequest {
  readonly id: string | undefined
  readonly rows: number
  readonly data: Float32Array
  /** Client-requested timeout (ms), already validated; null when absent. */
  readonly timeoutMs: number | null
}

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

export function parseInferRequest (body: unknown, model: ModelConfig): InferRequest {
  if (!isObj(body)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'request body must be an object with an "inputs" array')
  const id = body.id
  if (id !== undefined && typeof id !== 'string') throw fwError('FW_ERR_INFER_INPUT_INVALID', '"id" must be a string')
  const inputs = body.inputs
  if (!Array.isArray(inputs) || inputs.length === 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"inputs" must be a non-empty array')
  if (inputs.length !== 1) throw fwError('FW_ERR_INFER_INPUT_INVALID', `model ${model.id} takes exactly one input, "${model.input.name}"; got ${inputs.length}`)
  const inp: unknown = inputs[0]
  if (!isObj(inp)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'inputs[0] must be an object')
  if (inp.name !== model.input.name) throw fwError('FW_ERR_INFER_INPUT_INVALID', `inputs[0].name must be "${model.input.name}", got ${JSON.stringify(inp.name)}`)
  if (inp.datatype !== model.input.datatype) throw fwError('FW_ERR_INFER_DATATYPE', `inputs[0].datatype must be "${model.input.datatype}", got ${JSON.stringify(inp.datatype)}`)
  const dim = model.input.shape[1] ?? 0
  const shape = inp.shape
  if (!Array.isArray(shape) || shape.length !== 2 || !Number.isInteger(shape[0]) || (shape[0] as number) < 1 || shape[1] !== dim) {
    throw fwError('FW_ERR_INFER_SHAPE', `inputs[0].shape must be [rows, ${dim}] with rows >= 1, got ${JSON.stringify(shape)}`)
  }
  const rows = shape[0] as number
  if (rows > model.maxRowsPerRequest) throw fwError('FW_ERR_INFER_BATCH_TOO_LARGE', `inputs[0] has ${rows} rows; model ${model.id} takes at most ${model.maxRowsPerRequest} per request`)
  const data = toFloat32(inp.data, rows * dim)

  const outputs = body.outputs
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"outputs" must be an array')
    for (const o of outputs) {
      if (!isObj(o) || o.name !== model.output.name) throw fwError('FW_ERR_INFER_INPUT_INVALID', `requested output must be "${model.output.name}"`)
    }
  }
  let timeoutMs: number | null = null
  const params = body.parameters
  if (params !== undefined) {
    if (!isObj(params)) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"parameters" must be an object')
    const t = params.timeout_ms
    if (t !== undefined) {
      if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'parameters.timeout_ms must be a positive number')
      timeoutMs = t
    }
  }
  return { id, rows, data, timeoutMs }
}

/** Accepts flat or nested (row-major) number arrays, or a Float32Array from msgpackr. */
function toFloat32 (data: unknown, expected: number): Float32Array {
  if (data instanceof Float32Array) {
    if (data.length !== expected) throw fwError('FW_ERR_INFER_ELEMENT_COUNT', `inputs[0].data has ${data.length} elements; shape needs ${expected}`)
    // msgpackr may hand out a view over the message buffer, which uWS
    // reclaims after the callback: keep our own copy.
    return data.slice()
  }
  if (!Array.isArray(data)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'inputs[0].data must be an array of numbers')
  const out = new Float32Array(expected)
  const n = fill(data, out, 0, expected)
  if (n !== expected) throw fwError('FW_ERR_INFER_ELEMENT_COUNT', `inputs[0].data has ${n} elements; shape needs ${expected}`)
  return out
}

// Returns the element count seen; writes only while within `out`.
function fill (arr: readonly unknown[], out: Float32Array, start: number, expected: number): number {
  let n = start
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i]
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'inputs[0].data must hold finite numbers')
      if (n < expected) out[n] = v
      n++
    } else if (Array.isArray(v)) {
      n = fill(v, out, n, expected)
    } else {
      throw fwError('FW_ERR_INFER_INPUT_INVALID', `inputs[0].data must hold numbers, found ${v === null ? 'null' : typeof v}`)
    }
  }
  return n
}

/**
 * JSON response, assembled as a string: Float32Array.join formats each value
 * as the shortest double that round-trips, like JSON.stringify, without
 * building an intermediate number array.
 */
export function encodeJsonResponse (model: ModelConfig, version: string, id: string | undefined, rows: number, out: Float32Array): string {
  const idPart = id === undefined ? '' : `,"id":${JSON.stringify(id)}`
  return `{"model_name":${JSON.stringify(model.id)},"model_version":${JSON.stringify(version)}${idPart},"outputs":[{"name":${JSON.stringify(model.output.name)},"datatype":"FP32","shape":[${rows},${model.output.shape[1] ?? 0}],"data":[${out.join(',')}]}]}`
}

// Floats are written as float32: the outputs are float32, so nothing is lost.
const packr = new Packr({ useFloat32: 1, useRecords: false })

export function encodeMsgpack (value: unknown): Buffer {
  return packr.pack(value)
}

export function decodeMsgpack (buf: Buffer): unknown {
  return packr.unpack(buf)
}

export function msgpackResponse (model: ModelConfig, version: string, id: string | undefined, rows: number, out: Float32Array): Buffer {
  const body: Obj = {
    model_name: model.id,
    model_version: version,
    outputs: [{ name: model.output.name, datatype: 'FP32', shape: [rows, model.output.shape[1] ?? 0], data: Array.from(out) }],
  }
  if (id !== undefined) body.id = id
  return encodeMsgpack(body)
}

export function modelMetadata (model: ModelConfig, version: string): Obj {
  return {
    name: model.id,
    versions: [version],
    platform: 'onnxruntime_onnx',
    inputs: [{ name: model.input.name, datatype: model.input.datatype, shape: model.input.shape }],
    outputs: [{ name: model.output.name, datatype: model.output.datatype, shape: model.output.shape }],
  }
}
