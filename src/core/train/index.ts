export * from './adamw.js';
export * from './batch.js';
export * from './clip.js';
export * from './evaluate.js';
export * from './loss-fns.js';
export * from './schedule.js';
export * from './trainer.js';
export * from './estimate.js';
