// erf(x) in f64 to ~1e-14, for the exact GELU (JavaScript has no Math.erf). |x| < 3: the Maclaurin
// series 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)) (largest term ~170 at x = 3, so the
// cancellation costs < 3 digits); |x| >= 3: erfc by its continued fraction
// erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated bottom-up.
const TWO_OVER_SQRT_PI = 1.1283791670955126;
const INV_SQRT_PI = 0.5641895835477563;

export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 3) {
    const x2 = x * x;
    let term = x; // (-1)^n x^(2n+1) / n!
    let sum = x;
    for (let n = 1; n < 60; n++) {
      term *= -x2 / n;
      const d = term / (2 * n + 1);
      sum += d;
      if (Math.abs(d) < 1e-17 * Math.abs(sum)) break;
    }
    return TWO_OVER_SQRT_PI * sum;
  }
  if (a > 6) return Math.sign(x); // erfc(6) = 2e-17
  let k = a;
  for (let n = 80; n >= 1; n--) k = a + n / 2 / k;
  const erfc = (Math.exp(-a * a) * INV_SQRT_PI) / k;
  return Math.sign(x) * (1 - erfc);
}
