// What the two baseline servers share, so they differ from each other (and
// from fairway) only in the HTTP layer: argument parsing, one onnxruntime
// session (intraOpNumThreads 1, like fairway's workers), the same OIP v2 JSON
// request parsing and the same response text fairway writes.
// No tenancy, no admission, no queueing, no worker threads: inference runs on
// the server's only thread.

import { existsSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as ort from 'onnxruntime-node'
import { cliFail, parseCli } from '../cli-args.js'

export interface BaselineOptions {
  readonly host: string
  readonly port: number
  readonly modelPath: string
  readonly modelName: string
  readonly modelVersion: string
  /** Answer every infer request 429 after reading its body, without running the model (bare-server only). */
  readonly refuse: boolean
}

/** The directory holding fairway's package.json (from perf/baselines or dist/perf/baselines). */
export function packageDir (): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'models'))) return dir
    if (dirname(dir) === dir) return process.cwd()
  }
}

/** `--port P` (0 = ephemeral), `--host H`, model path as `--model FILE` or the first positional. */
export function baselineArgs (name: string): BaselineOptions {
  const usage = `usage: node dist/perf/baselines/${name}.js [MODEL.onnx] [--model FILE] [--port P] [--host H]
  MODEL.onnx / --model FILE   the model served (default models/tiny-classifier/1/model.onnx)
  --port P                    0 (default) = ephemeral; the bound port is printed
  --host H                    default 127.0.0.1
  --refuse                    bare-server only: answer every infer request 429 once its body is read, no
                              inference (the cheapest refusal: a floor for what fairway's refusals cost)
  --help                      this text`
  const { values, positionals } = parseCli(usage, { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' }, model: { type: 'string' }, refuse: { type: 'boolean', default: false } }, true)
  if (values.refuse && name !== 'bare-server') cliFail(usage, `${name}: --refuse is a bare-server option`)
  if (positionals.length > 1) cliFail(usage, `${name}: one model, got ${positionals.join(' ')}`)
  const port = Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) cliFail(usage, `${name}: --port must be an integer 0..65535`)
  const modelPath = resolve(values.model ?? positionals[0] ?? join(packageDir(), 'models', 'tiny-classifier', '1', 'model.onnx'))
  // models/<name>/<version>/model.onnx names the model and version like fairway's repository.
  return { host: values.host, port, modelPath, modelName: basename(dirname(dirname(modelPath))), modelVersion: basename(dirname(modelPath)), refuse: values.refuse }
}

export class Model {
  private constructor (
    private readonly session: ort.InferenceSession,
    readonly name: string,
    readonly version: string,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  static async load (opts: BaselineOptions): Promise<Model> {
    const session = await ort.InferenceSession.create(opts.modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionProviders: ['cpu'] })
    const inputName = session.inputNames[0]
    const outputName = session.outputNames[0]
    if (inputName === undefined || outputName === undefined) throw new Error(`${opts.modelPath}: model has no input or output`)
    return new Model(session, opts.modelName, opts.modelVersion, inputName, outputName)
  }

  /** Parses an OIP v2 JSON infer request, runs it, returns the OIP v2 JSON reply; throws BadRequest. */
  async infer (body: Buffer): Promise<string> {
    let req: { id?: unknown, inputs?: Array<{ name?: unknown, shape?: unknown, data?: unknown }> }
    try {
      req = JSON.parse(body.toString('utf8')) as typeof req
    } catch {
      throw new BadRequest('body is not valid JSON')
    }
    const inp = Array.isArray(req.inputs) ? req.inputs[0] : undefined
    if (inp === undefined || inp.name !== this.inputName) throw new BadRequest(`inputs[0].name must be "${this.inputName}"`)
    const shape = inp.shape
    if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d > 0)) throw new BadRequest('inputs[0].shape must be [rows, dim]')
    const [rows, dim] = shape as [number, number]
    const data = inp.data
    if (!Array.isArray(data) || data.length !== rows * dim) throw new BadRequest(`inputs[0].data must hold ${rows * dim} numbers`)
    const input = new Float32Array(rows * dim)
    for (let i = 0; i < input.length; i++) {
      const v = data[i]
      if (typeof v !== 'number') throw new BadRequest('inputs[0].data must hold numbers')
      input[i] = v
    }
    const out = await this.session.run({ [this.inputName]: new ort.Tensor('float32', input, [rows, dim]) })
    const t = out[this.outputName]
    if (t === undefined) throw new Error(`output ${this.outputName} missing`)
    const values = t.data as Float32Array
    const id = typeof req.id === 'string' ? `,"id":${JSON.stringify(req.id)}` : ''
    return `{"model_name":${JSON.stringify(this.name)},"model_version":${JSON.stringify(this.version)}${id},"outputs":[{"name":${JSON.stringify(this.outputName)},"datatype":"FP32","shape":[${rows},${values.length / rows}],"data":[${values.join(',')}]}]}`
  }
}

export class BadRequest extends Error {}
