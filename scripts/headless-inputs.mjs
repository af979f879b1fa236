// The headless runner's command line and the files its config names, checked before anything is built
// or launched. Paths may be symbolic links, to folders or to files (a Hugging Face cache snapshot is a
// folder of links to blobs): they are followed with stat, never lstat, so a link counts as what it
// points to. Chromium's folder picker skips links, so the model's files are handed over one by one.
import { accessSync, constants, existsSync, readdirSync, readFileSync, readlinkSync, lstatSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';

/** A problem with the command line, the config or the files it names: exit 2, one line. */
export class InputError extends Error {}

export function usage() {
  return 'usage: npm run headless -- train --config RUN.yaml [--crash-at-step N]';
}

export function parseArgs(argv) {
  const [command, ...rest] = argv;
  if (command !== 'train') throw new InputError(usage());
  const i = rest.indexOf('--config');
  const config = i >= 0 ? rest[i + 1] : undefined;
  if (!config) throw new InputError(usage());
  // --crash-at-step N: tear the page down right after step N, reopen the app and resume the run (headless-crash.mjs).
  const c = rest.indexOf('--crash-at-step');
  let crashAtStep = null;
  if (c >= 0) {
    const value = rest[c + 1];
    crashAtStep = /^[1-9]\d*$/.test(value ?? '') ? Number(value) : NaN;
    if (!Number.isSafeInteger(crashAtStep)) throw new InputError(`--crash-at-step: needs a step number (1 or more), not ${value ?? 'nothing'}`);
  }
  return { configPath: resolve(config), crashAtStep };
}

/**
 * Other tools' names for the path keys (LLaMA-Factory's model_name_or_path, kohya's pretrained_model_name_or_path and
 * train_data_dir), as src/core/config/aliases.ts maps them for the app: the runner must find the same files.
 */
const PATH_ALIASES = {
  base_model: ['model_name_or_path', 'pretrained_model_name_or_path'],
  train_data: ['train_data_dir'],
};

/** Paths in the config are relative to the config file. Everything else is validated by the app itself. */
export function readConfig(configPath) {
  if (!existsSync(configPath)) throw new InputError(`${configPath}: no such config file`);
  let text;
  try {
    text = readFileSync(configPath, 'utf8');
  } catch (e) {
    throw new InputError(`${configPath}: ${fsProblem(e)}`);
  }
  let data;
  try {
    data = parseYaml(text) ?? {};
  } catch (e) {
    throw new InputError(`${basename(configPath)}: not valid YAML (${String(e.message).split('\n')[0]})`);
  }
  if (typeof data !== 'object' || Array.isArray(data)) throw new InputError(`${basename(configPath)}: must be a YAML mapping of keys to values`);
  const base = dirname(configPath);
  const path = (key, required) => {
    const value = data[key] ?? data[PATH_ALIASES[key]?.find((alias) => data[alias] !== undefined)];
    if (value === undefined || value === null || value === '') {
      if (required) throw new InputError(`${basename(configPath)}: ${key} is required`);
      return null;
    }
    if (typeof value !== 'string') throw new InputError(`${basename(configPath)}: ${key} must be a path`);
    return resolve(base, value);
  };
  const baseModel = path('base_model', true);
  const trainData = path('train_data', true);
  const valData = path('val_data', false);
  // A diffusers folder (model_index.json) makes this an image LoRA run: the model, the images and the validation
  // images are folders handed over whole, each file with its path inside its folder.
  if (follow('base_model', baseModel).isDirectory() && existsSync(join(baseModel, 'model_index.json'))) {
    return {
      kind: 'image',
      text,
      baseModel,
      model: folderTree('base_model', baseModel),
      train: folderTree('train_data', trainData),
      val: valData && folderTree('val_data', valData),
      outputDir: path('output_dir', true),
      backend: typeof data.backend === 'string' ? data.backend : 'auto',
      hasSweep: Object.hasOwn(data, 'sweep'),
      initAdapter: null,
    };
  }
  return {
    kind: 'text',
    text,
    baseModel,
    modelFiles: modelFolderFiles('base_model', baseModel),
    trainData: dataFile('train_data', trainData),
    valData: valData && dataFile('val_data', valData),
    outputDir: path('output_dir', true),
    // init_adapter: a PEFT adapter folder next to the YAML, stored with the model under the name as written (the app's
    // run config names stored adapters), so the run finds it the way the app's does.
    initAdapter: data.init_adapter ? { name: String(data.init_adapter), files: adapterFolderFiles('init_adapter', path('init_adapter', false)) } : null,
    backend: typeof data.backend === 'string' ? data.backend : 'auto',
    // A `sweep:` map makes the config a grid of runs (headless-sweep.mjs).
    hasSweep: Object.hasOwn(data, 'sweep'),
  };
}

/**
 * The files directly inside a model folder, links followed: absolute paths under the folder as given,
 * so each file keeps its own name (a cache's link `model.safetensors`, not the blob's hash) while
 * Chromium reads whatever it points to. Sub-folders are left out, as the importer reads only top-level
 * files. A link that leads nowhere is refused by name rather than skipped: skipping config.json would
 * turn into a misleading "config.json is missing".
 */
export function modelFolderFiles(key, dir) {
  const info = follow(key, dir);
  if (!info.isDirectory()) throw new InputError(`${key}: ${dir} is not a folder`);
  let names;
  try {
    names = readdirSync(dir).sort();
  } catch (e) {
    throw new InputError(`${key}: cannot list ${dir}: ${fsProblem(e)}`);
  }
  const files = [];
  for (const name of names) {
    const p = join(dir, name);
    if (follow(key, p).isFile()) files.push(p);
  }
  if (files.length === 0) throw new InputError(`${key}: ${dir} holds no files`);
  return files;
}

/**
 * Every file under a folder, links followed, hidden files and folders (a leading dot) left out: { abs, rel } with
 * rel '/'-separated inside the folder, sorted. What an image run reads: a diffusers model's component folders, an
 * image folder's kohya `n_name` repeat folders.
 */
export function folderTree(key, dir) {
  if (!follow(key, dir).isDirectory()) throw new InputError(`${key}: ${dir} is not a folder`);
  const files = [];
  const walk = (abs, rel) => {
    let names;
    try {
      names = readdirSync(abs).sort();
    } catch (e) {
      throw new InputError(`${key}: cannot list ${abs}: ${fsProblem(e)}`);
    }
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const p = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const info = follow(key, p);
      if (info.isDirectory()) walk(p, r);
      else if (info.isFile()) files.push({ abs: p, rel: r });
    }
  };
  walk(dir, '');
  if (files.length === 0) throw new InputError(`${key}: ${dir} holds no files`);
  return { name: basename(dir), files };
}

/** A PEFT adapter folder's two files (others in it, such as README.md, are left out), links followed. */
export function adapterFolderFiles(key, dir) {
  const info = follow(key, dir);
  if (!info.isDirectory()) throw new InputError(`${key}: ${dir} is not a folder; give the PEFT adapter folder (adapter_config.json and adapter_model.safetensors)`);
  return ['adapter_config.json', 'adapter_model.safetensors'].map((name) => {
    const p = join(dir, name);
    if (!existsSync(p)) throw new InputError(`${key}: ${dir} has no ${name}; a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors`);
    return dataFile(key, p);
  });
}

function dataFile(key, p) {
  const info = follow(key, p);
  if (!info.isFile()) throw new InputError(`${key}: ${p} is not a file`);
  try {
    accessSync(p, constants.R_OK);
  } catch (e) {
    throw new InputError(`${key}: cannot read ${p}: ${fsProblem(e)}`);
  }
  return p;
}

/** stat() through any links, with a one-line reason when that fails (a dangling or looping link named as such). */
function follow(key, p) {
  try {
    return statSync(p);
  } catch (e) {
    let link = null;
    try {
      if (lstatSync(p).isSymbolicLink()) link = readlinkSync(p);
    } catch {
      // not there at all: said below
    }
    if (link !== null && e.code === 'ENOENT') throw new InputError(`${key}: ${p} is a symbolic link to ${link}, which does not exist`);
    if (e.code === 'ENOENT') throw new InputError(`${key}: ${p} does not exist`);
    throw new InputError(`${key}: ${p}: ${fsProblem(e)}`);
  }
}

function fsProblem(e) {
  switch (e?.code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ELOOP':
      return 'a loop of symbolic links';
    case 'ENOTDIR':
      return 'a part of the path is not a folder';
    default:
      return String(e?.message ?? e).split('\n')[0];
  }
}
