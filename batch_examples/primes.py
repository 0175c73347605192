"""Print the primes in [START, END), one per line: one chunk of "the first primes" example.

    python3 batch_examples/primes.py 0 100000

Trial division by the primes up to sqrt(END - 1), on purpose: simple, stdlib only, Python 3.8+,
and slow enough (a few tenths of a second per 100,000 numbers near 4,000,000) that a chunk is a
real piece of work for one core.
"""

import sys


def small_primes(limit):
    """The primes <= limit, by a plain sieve of Eratosthenes."""
    if limit < 2:
        return []
    sieve = bytearray([1]) * (limit + 1)
    sieve[0] = sieve[1] = 0
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit + 1, n)))
    return [n for n, flag in enumerate(sieve) if flag]


def is_prime(n, divisors):
    """n is prime if no divisor up to its square root divides it (n coprime to 6, n > 3)."""
    for d in divisors:
        if d * d > n:
            return True
        if n % d == 0:
            return False
    return True


def primes_between(start, end):
    """The primes p with start <= p < end, in increasing order.

    Only 2, 3 and the numbers 6k - 1 and 6k + 1 can be prime; the rest are never tried.
    """
    divisors = small_primes(int(max(end - 1, 0) ** 0.5) + 1)[2:]  # 5, 7, 11, ...
    found = [p for p in (2, 3) if start <= p < end]
    first = max(start, 5)
    for n in range(first - first % 6, end, 6):
        for candidate in (n + 1, n + 5):
            if first <= candidate < end and is_prime(candidate, divisors):
                found.append(candidate)
    return found


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: primes.py START END  (prints the primes in [START, END))")
    start, end = int(argv[1]), int(argv[2])
    sys.stdout.write("".join(f"{p}\n" for p in primes_between(start, end)))


if __name__ == "__main__":
    main(sys.argv)
