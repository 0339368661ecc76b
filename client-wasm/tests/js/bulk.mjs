// The bulk target's byte stream: AES-256-CTR keystream under the key SHA-256(seed), so
// that a client regenerates what it should receive without the target sending a digest.
import { createCipheriv, createHash } from 'node:crypto';

const CHUNK = 64 * 1024;

/** Yields `n` bytes of stream `seed` in chunks of 64 KiB. */
export function* bulkStream(seed, n) {
  const key = createHash('sha256').update(String(seed)).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  for (let left = n; left > 0; left -= CHUNK) {
    yield cipher.update(left >= CHUNK ? zeros : zeros.subarray(0, left));
  }
}

/** SHA-256 (hex) of `n` bytes of stream `seed`. */
export function bulkDigest(seed, n) {
  const h = createHash('sha256');
  for (const chunk of bulkStream(seed, n)) h.update(chunk);
  return h.digest('hex');
}
