/* A consumer of the original ANet result stream (anet's default output) in portable C99.
 *
 *     anet batch_examples/primes.txt | ./consumer
 *
 * The stream is a sequence of records, one per successful job:
 *     uint32 little-endian job id | uint32 little-endian length | length bytes of stdout
 * Integers are assembled from bytes, so this works on any byte order. Payloads are streamed
 * in chunks, never held whole. Prints one line per job and a total; exits 1 on a truncated
 * stream, 2 on a read error.
 *
 * Build: cc -std=c99 -O2 -o consumer batch_examples/consumer.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#endif

#define PREVIEW 60 /* bytes of the first line shown */

static unsigned long long offset; /* bytes consumed so far, for error messages */

/* Read exactly n bytes (fread may return short counts); return how many arrived. */
static size_t read_full(unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t r = fread(buf + got, 1, n - got, stdin);
        if (r == 0) {
            if (ferror(stdin)) {
                perror("consumer: read");
                exit(2);
            }
            break; /* EOF */
        }
        got += r;
    }
    offset += got;
    return got;
}

static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void truncated(unsigned long long record_start) {
    fprintf(stderr, "consumer: truncated stream: record at byte %llu ends at byte %llu\n",
            record_start, offset);
    exit(1);
}

/* Stream one payload of len bytes, keeping up to PREVIEW bytes of its first line. */
static void consume_payload(uint32_t len, char *preview, unsigned long long record_start) {
    unsigned char chunk[65536];
    size_t shown = 0;
    int in_first_line = 1;
    while (len > 0) {
        size_t want = len < sizeof chunk ? len : sizeof chunk;
        size_t got = read_full(chunk, want);
        for (size_t i = 0; i < got && in_first_line; i++) {
            if (chunk[i] == '\n' || shown == PREVIEW) {
                in_first_line = 0;
            } else {
                preview[shown++] = (chunk[i] >= 0x20 && chunk[i] < 0x7f) ? (char)chunk[i] : '.';
            }
        }
        if (got < want) truncated(record_start);
        len -= (uint32_t)got;
    }
    preview[shown] = '\0';
}

int main(void) {
#ifdef _WIN32
    _setmode(_fileno(stdin), _O_BINARY);
#endif
    unsigned char header[8];
    char preview[PREVIEW + 1];
    unsigned long long jobs = 0, total = 0;
    for (;;) {
        unsigned long long record_start = offset;
        size_t got = read_full(header, sizeof header);
        if (got == 0) break; /* clean end between records */
        if (got < sizeof header) truncated(record_start);
        uint32_t id = le32(header), len = le32(header + 4);
        consume_payload(len, preview, record_start);
        printf("job %lu: %lu bytes, first line: %s\n", (unsigned long)id, (unsigned long)len,
               preview);
        jobs++;
        total += len;
    }
    printf("total: %llu jobs, %llu bytes\n", jobs, total);
    return 0;
}
