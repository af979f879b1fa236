import { seededRandom } from '../random.js';

/**
 * The built-in image demo's pictures: 32×32 RGB scenes of one flat-coloured shape on a plain background, each with
 * the caption that describes it ("a small red circle on a blue background"), drawn from a seed. DOM-free and exact
 * (no anti-aliasing), so a test can check every caption against the pixels, and the same seed always gives the same
 * bytes. The demo's tiny SD pipeline is pretrained on the plain scenes; the style set adds one visual style on top,
 * which is what a LoRA then learns.
 */

export const SCENE_SIZE = 32;

/** The palette: few and far apart, so a tiny model can tell them apart and a test can name each pixel's colour. */
export const COLOURS = {
  red: [220, 30, 30],
  green: [30, 170, 60],
  blue: [40, 70, 220],
  yellow: [240, 220, 40],
  white: [245, 245, 245],
  black: [20, 20, 20],
} as const satisfies Record<string, readonly [number, number, number]>;

export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

export const SHAPES = ['circle', 'square', 'triangle'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** Shape sizes in pixels (the circle's diameter, the square's side, the triangle's base and height). */
export const SIZES = { small: 10, large: 20 } as const;
export type SizeName = keyof typeof SIZES;
export const SIZE_NAMES = Object.keys(SIZES) as SizeName[];

/**
 * Visual styles a LoRA can learn, each drawn over the whole scene. stripes: 4-pixel bands of rows (y mod 8 < 4)
 * darkened to half, coarse enough to survive the VAE's 4× downscale (one latent row in two); dots: a grey 2×2 dot every 6 pixels; outline: the shape's border pixels in grey.
 * Each leaves most of the shape's pixels in its own colour, so the caption stays true.
 */
export const STYLES = ['stripes', 'dots', 'outline'] as const;
export type StyleName = (typeof STYLES)[number];

export interface Scene {
  readonly shape: ShapeName;
  readonly size: SizeName;
  readonly colour: ColourName;
  /** Never the shape's colour. */
  readonly background: ColourName;
  /** The shape's top-left corner; the shape lies wholly inside the image. */
  readonly x: number;
  readonly y: number;
  readonly style: StyleName | null;
}

/** The caption of a scene, e.g. "a large blue square on a white background, stripes style". */
export function captionOf(scene: Scene): string {
  const base = `a ${scene.size} ${scene.colour} ${scene.shape} on a ${scene.background} background`;
  return scene.style ? `${base}, ${scene.style} style` : base;
}

/** Whether pixel (px, py) is inside the shape (pixel centres, so edges are the same on every run). */
export function insideShape(scene: Scene, px: number, py: number): boolean {
  const side = SIZES[scene.size];
  const u = px + 0.5 - scene.x;
  const v = py + 0.5 - scene.y;
  if (u < 0 || v < 0 || u > side || v > side) return false;
  switch (scene.shape) {
    case 'square':
      return true;
    case 'circle': {
      const r = side / 2;
      return (u - r) ** 2 + (v - r) ** 2 <= r * r;
    }
    case 'triangle':
      // Apex at the top centre, base along the bottom edge.
      return Math.abs(u - side / 2) <= (v / side) * (side / 2);
  }
}

/** The scene's pixels: SCENE_SIZE² × 3 bytes, rows top to bottom. */
export function renderScene(scene: Scene): Uint8Array {
  const n = SCENE_SIZE;
  const rgb = new Uint8Array(n * n * 3);
  const fg = COLOURS[scene.colour];
  const bg = COLOURS[scene.background];
  const inside = (px: number, py: number) => px >= 0 && py >= 0 && px < n && py < n && insideShape(scene, px, py);
  for (let py = 0; py < n; py++) {
    for (let px = 0; px < n; px++) {
      const into = inside(px, py);
      let c: readonly number[] = into ? fg : bg;
      if (scene.style === 'stripes' && py % 8 < 4) c = c.map((v) => v >> 1);
      else if (scene.style === 'dots' && px % 6 < 2 && py % 6 < 2) c = MARK;
      else if (scene.style === 'outline' && into && !(inside(px - 1, py) && inside(px + 1, py) && inside(px, py - 1) && inside(px, py + 1))) c = MARK;
      rgb.set(c, (py * n + px) * 3);
    }
  }
  return rgb;
}

/** The dots' and outlines' colour: a grey that is no palette colour, so a caption's colours stay the scene's own. */
const MARK = [128, 128, 128] as const;

/** `count` scenes drawn from `seed` (shape, size, colours and position uniform), all in `style` (or plain). */
export function randomScenes(seed: number, count: number, style: StyleName | null = null): Scene[] {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const scenes: Scene[] = [];
  for (let i = 0; i < count; i++) {
    const shape = pick(SHAPES);
    const size = pick(SIZE_NAMES);
    const colour = pick(COLOUR_NAMES);
    const background = pick(COLOUR_NAMES.filter((c) => c !== colour));
    const room = SCENE_SIZE - SIZES[size];
    scenes.push({ shape, size, colour, background, x: Math.floor(random() * (room + 1)), y: Math.floor(random() * (room + 1)), style });
  }
  return scenes;
}

/** A scene as the demo ships it: file name, pixels and caption. */
export interface DemoImage {
  readonly scene: Scene;
  readonly caption: string;
  readonly rgb: Uint8Array;
}

export function demoImage(scene: Scene): DemoImage {
  return { scene, caption: captionOf(scene), rgb: renderScene(scene) };
}

/** Seeds of the two sets, apart so the style set's scenes are not the base set's. */
export const BASE_SET_SEED = 1301;
export const STYLE_SET_SEED = 1302;
export const DEMO_STYLE: StyleName = 'stripes';

/** The pretraining set: plain scenes. */
export function baseSet(count: number): DemoImage[] {
  return randomScenes(BASE_SET_SEED, count).map(demoImage);
}

/** The fine-tuning set the demo ships: new scenes in the demo's style. */
export function styleSet(count: number, style: StyleName = DEMO_STYLE): DemoImage[] {
  return randomScenes(STYLE_SET_SEED, count, style).map(demoImage);
}

/** Every word a demo caption can hold, in a fixed order (the tokenizer gives each one token). */
export function demoWords(): string[] {
  return ['a', 'on', 'background', 'style', ...SIZE_NAMES, ...COLOUR_NAMES, ...SHAPES, ...STYLES];
}
