import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: end-to-end tests spawn fio/qemu-img; keep the pool small so timings stay sane.
    maxWorkers: 2,
  },
});
