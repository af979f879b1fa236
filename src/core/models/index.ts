export * from './config.js';
export * from './manifest.js';
export * from './linear.js';
export * from './model.js';
export * from './loss.js';
export * from './generate.js';
export * from './load.js';
