export * from './scenes.js';
export { demoTokenizerFiles, DEMO_TOKENIZER_LENGTH, type DemoTokenizerFiles } from './tokenizer.js';
