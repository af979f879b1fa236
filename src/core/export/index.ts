export * from './peft.js';
