export * from './peft.js';
export * from './merged-model.js';
