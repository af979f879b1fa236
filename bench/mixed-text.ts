import { uint32Stream } from '../src/core/random';

/**
 * A deterministic mixed-language corpus for the tokenizer benchmark, built here so that the bench needs no
 * download: prose from a few thousand made-up words (Zipf-distributed, as words in real text are), accented
 * Latin words, Japanese, Chinese and Korean runs, emoji (some with modifiers and joiners), numbers (mostly small
 * or years, a fifth long and arbitrary) and dates, and code with indentation and runs of spaces. Paragraphs are separated by blank lines, as in a .txt dataset.
 */

const SYLLABLES = ['ka', 'lo', 'mer', 'an', 'sti', 'ven', 'ro', 'the', 'qu', 'ar', 'ing', 'pre', 'dis', 'ul', 'tion', 'or', 'be', 'wa', 'fen', 'ix'];
const ACCENTED = ['café', 'naïve', 'façade', 'über', 'señor', 'mañana', 'Ångström', 'jalapeño', 'déjà', 'coöperate', 'Straße', 'øre', 'Łódź', 'İstanbul'];
const CJK = ['東京は日本の首都です', '你好，世界', '机器学习', '自然言語処理', '今日はいい天気ですね', '大型语言模型的微调', 'トークナイザー', '한국어 텍스트'];
const EMOJI = ['🤖', '🎉', '👍🏽', '👨‍👩‍👧', '🚀', '❤️', '🇫🇷', '😂😂'];
const CODE = [
  'function add(a, b) {\n    return a + b;\n}',
  'for (let i = 0; i < n; i++) {\n        total   +=   xs[i] * 2;\n    }',
  'def train(model, data):\n    for x, y in data:\n        loss = model(x) - y\n\n    return loss',
  '\tif (x  ==  null)\t{\n\t\tthrow new Error("bad  input");\n\t}',
];

export function mixedText(targetChars: number, seed = 1): string {
  const next = uint32Stream(seed);
  const uniform = () => next() / 4294967296;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(uniform() * xs.length)]!;
  const words: string[] = [];
  for (let i = 0; i < 5000; i++) {
    let w = '';
    const n = 1 + Math.floor(uniform() * 4);
    for (let k = 0; k < n; k++) w += pick(SYLLABLES);
    words.push(w);
  }
  // Zipf: rank r is drawn with probability ∝ 1/r, by inverting the harmonic CDF approximately.
  const zipfWord = () => words[Math.min(words.length - 1, Math.floor(Math.exp(uniform() * Math.log(words.length + 1))) - 1)]!;

  // Numbers in text are mostly small or years; a few are long and arbitrary (prices, counts, identifiers).
  const number = () => {
    const r = uniform();
    if (r < 0.5) return Math.floor(uniform() * 100);
    if (r < 0.8) return 1800 + Math.floor(uniform() * 230);
    return Math.floor(uniform() * 10 ** (3 + Math.floor(uniform() * 5)));
  };

  const parts: string[] = [];
  let size = 0;
  while (size < targetChars) {
    const kind = uniform();
    let paragraph: string;
    if (kind < 0.1) paragraph = pick(CODE);
    else {
      const sentence: string[] = [];
      const n = 20 + Math.floor(uniform() * 80);
      for (let i = 0; i < n; i++) {
        const r = uniform();
        let w: string;
        if (r < 0.85) w = zipfWord();
        else if (r < 0.9) w = pick(ACCENTED);
        else if (r < 0.93) w = pick(CJK);
        else if (r < 0.95) w = pick(EMOJI);
        else if (r < 0.98) w = String(number());
        else w = `${2000 + Math.floor(uniform() * 30)}-0${1 + Math.floor(uniform() * 9)}-1${Math.floor(uniform() * 10)}`;
        if (i === 0) w = w.charAt(0).toUpperCase() + w.slice(1);
        sentence.push(w + (uniform() < 0.1 ? pick([',', '.', ';', '!', '?', ':']) : ''));
      }
      paragraph = sentence.join(' ') + '.';
    }
    parts.push(paragraph);
    size += paragraph.length + 2;
  }
  return parts.join('\n\n');
}
