// Text widths from a TrueType font's own advance widths. Headless vega (no canvas package)
// guesses 0.8 em per character, which leaves charts with wide empty margins and truncated labels;
// reading the font that resvg and Chromium will draw with (DejaVu Sans on Debian) lays them out right.
import { existsSync, readFileSync } from 'node:fs';

export interface FontWidths {
  /** Advance width per BMP code point, in em. */
  advance: Map<number, number>;
  /** Width for characters the font lacks, in em. */
  fallback: number;
}

function u16(b: Buffer, at: number): number {
  if (at + 2 > b.length) throw new RangeError(`font table read past the end of the file (offset ${at})`);
  return b.readUInt16BE(at);
}

/** Parses head, hhea, hmtx and a Unicode cmap (format 4) of a TrueType/OpenType file. */
export function parseFontWidths(file: string): FontWidths {
  const b = readFileSync(file);
  const where = (what: string): string => `${file}: ${what}`;
  if (b.length < 12) throw new Error(where('too short for a font file'));
  const numTables = u16(b, 4);
  const tables = new Map<string, number>();
  for (let i = 0; i < numTables; i++) {
    const rec = 12 + 16 * i;
    if (rec + 16 > b.length) throw new Error(where('table directory runs past the end'));
    tables.set(b.toString('latin1', rec, rec + 4), b.readUInt32BE(rec + 8));
  }
  const table = (tag: string): number => {
    const at = tables.get(tag);
    if (at === undefined) throw new Error(where(`no ${tag} table`));
    return at;
  };
  const unitsPerEm = u16(b, table('head') + 18);
  if (unitsPerEm === 0) throw new Error(where('unitsPerEm is 0'));
  const numHMetrics = u16(b, table('hhea') + 34);
  if (numHMetrics === 0) throw new Error(where('hhea has no horizontal metrics'));
  const hmtx = table('hmtx');
  const glyphAdvance = (glyph: number): number => u16(b, hmtx + 4 * Math.min(glyph, numHMetrics - 1)) / unitsPerEm;

  const cmap = table('cmap');
  let sub = -1;
  for (let i = 0, n = u16(b, cmap + 2); i < n; i++) {
    const rec = cmap + 4 + 8 * i;
    const platform = u16(b, rec);
    const encoding = u16(b, rec + 2);
    const off = cmap + b.readUInt32BE(rec + 4);
    if (((platform === 3 && encoding === 1) || platform === 0) && u16(b, off) === 4) {
      sub = off;
      break;
    }
  }
  if (sub < 0) throw new Error(where('no Unicode cmap subtable of format 4'));
  const segCount = u16(b, sub + 6) / 2;
  const ends = sub + 14;
  const starts = ends + 2 * segCount + 2;
  const deltas = starts + 2 * segCount;
  const rangeOffsets = deltas + 2 * segCount;
  const advance = new Map<number, number>();
  for (let s = 0; s < segCount; s++) {
    const end = u16(b, ends + 2 * s);
    const start = u16(b, starts + 2 * s);
    const delta = u16(b, deltas + 2 * s);
    const rangeOffset = u16(b, rangeOffsets + 2 * s);
    for (let c = start; c <= end && c < 0xffff; c++) {
      let glyph: number;
      if (rangeOffset === 0) glyph = (c + delta) & 0xffff;
      else {
        glyph = u16(b, rangeOffsets + 2 * s + rangeOffset + 2 * (c - start));
        if (glyph !== 0) glyph = (glyph + delta) & 0xffff;
      }
      if (glyph !== 0) advance.set(c, glyphAdvance(glyph));
    }
  }
  return { advance, fallback: glyphAdvance(0) || 0.6 };
}

/** Width in px of `text` at `fontSize` px. */
export function textWidth(font: FontWidths, text: string, fontSize: number): number {
  let em = 0;
  for (const ch of text) em += font.advance.get(ch.codePointAt(0) as number) ?? font.fallback;
  return em * fontSize;
}

const FACES: readonly { regular: string; bold: string }[] = [
  { regular: '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', bold: '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf' },
  {
    regular: '/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf',
    bold: '/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf',
  },
];

let loaded: { regular: FontWidths; bold: FontWidths } | null | undefined;

/** The widths of the sans-serif face charts are drawn in (regular and bold), or null if none is installed. */
export function chartFontWidths(): { regular: FontWidths; bold: FontWidths } | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  for (const face of FACES) {
    if (!existsSync(face.regular)) continue;
    const regular = parseFontWidths(face.regular);
    const bold = existsSync(face.bold) ? parseFontWidths(face.bold) : regular;
    loaded = { regular, bold };
    break;
  }
  return loaded;
}
