export * from './settings.js';
export * from './adapter.js';
export * from './merge.js';
export * from './scaled-adapter.js';
