"""Loops compiled by numba, for steps that numpy and polars have no whole-array form of.

numba is imported with this module, which the steps import when they first need a loop (the
import costs 0.1-0.6 s), and the machine code is compiled once per machine and cached on disk
(`cache=True`: in `__pycache__` beside this file, or numba's user-wide cache where that cannot be
written). The loops release the GIL, so the steps run them on `minhash.THREADS` threads.
"""

from __future__ import annotations

import numba
import numpy as np

loop = numba.njit(cache=True, nogil=True)
"""A loop of a step: compiled, GIL released."""


_MASK = np.uint64(0xFFFFFFFF)
_PRIMES = tuple(np.uint64(prime) for prime in (2654435761, 2246822519, 3266489917, 668265263, 374761393))
"""xxh32's five primes."""


@numba.njit(cache=True, inline="always")
def _le32(buffer: np.ndarray, at: int) -> np.uint64:
    """The 32-bit little-endian word at `buffer[at:at + 4]` (bytes), as uint64."""
    return (
        np.uint64(buffer[at]) | (np.uint64(buffer[at + 1]) << np.uint64(8))
        | (np.uint64(buffer[at + 2]) << np.uint64(16)) | (np.uint64(buffer[at + 3]) << np.uint64(24))
    )


@numba.njit(cache=True, inline="always")
def _rotl(value: np.uint64, bits: int) -> np.uint64:
    """`value` (32 bits held in 64) rotated left by `bits`."""
    return ((value << np.uint64(bits)) | (value >> np.uint64(32 - bits))) & _MASK


@numba.njit(cache=True, inline="always")
def _round(lane: np.uint64, word: np.uint64) -> np.uint64:
    """One of xxh32's four lanes after taking in the next 32-bit word."""
    p1, p2 = _PRIMES[0], _PRIMES[1]
    return _rotl((lane + word * p2) & _MASK, 13) * p1 & _MASK


@numba.njit(cache=True, inline="always")
def _xxh32(buffer: np.ndarray, first: int, last: int) -> np.uint32:
    """xxh32 (seed 0) of `buffer[first:last]`: the reference algorithm (xxhash.h), in 64-bit
    integers masked to 32. Written here because it hashes each shingle where it lies in the
    buffer, with no bytes object made (the xxhash package takes one per call)."""
    p1, p2, p3, p4, p5 = _PRIMES
    at, count = first, np.uint64(last - first)
    if count >= 16:
        v1, v2, v3, v4 = (p1 + p2) & _MASK, p2, np.uint64(0), (np.uint64(1 << 32) - p1) & _MASK
        while at <= last - 16:
            v1, v2 = _round(v1, _le32(buffer, at)), _round(v2, _le32(buffer, at + 4))
            v3, v4 = _round(v3, _le32(buffer, at + 8)), _round(v4, _le32(buffer, at + 12))
            at += 16
        state = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
    else:
        state = p5
    state = (state + count) & _MASK
    while at + 4 <= last:
        state = _rotl((state + _le32(buffer, at) * p3) & _MASK, 17) * p4 & _MASK
        at += 4
    while at < last:
        state = _rotl((state + np.uint64(buffer[at]) * p5) & _MASK, 11) * p1 & _MASK
        at += 1
    state ^= state >> np.uint64(15)
    state = (state * p2) & _MASK
    state ^= state >> np.uint64(13)
    state = (state * p3) & _MASK
    state ^= state >> np.uint64(16)
    return np.uint32(state)


@loop
def sort_sets(
    begin: int, end: int, hashes: np.ndarray, offsets: np.ndarray, counts: np.ndarray, values: np.ndarray,
    starts: np.ndarray, sizes: np.ndarray,
) -> None:
    """Sets `begin` to `end`: the `counts[s]` hashes at `offsets[s]`, sorted and without repeats,
    written to `values` from `starts[s]`, their number to `sizes[s]`."""
    for s in range(begin, end):
        ordered = np.sort(hashes[offsets[s] : offsets[s] + counts[s]])
        at, size = starts[s], 0
        for value in ordered:
            if size == 0 or value != values[at + size - 1]:
                values[at + size] = value
                size += 1
        sizes[s] = size


@loop
def gather_runs(
    begin: int, end: int, values: np.ndarray, starts: np.ndarray, counts: np.ndarray, out: np.ndarray, at: np.ndarray
) -> None:
    """Runs `begin` to `end`: the `counts[r]` values from `starts[r]` copied to `out` from `at[r]`."""
    for run in range(begin, end):
        out[at[run] : at[run] + counts[run]] = values[starts[run] : starts[run] + counts[run]]


@loop
def count_shared(
    begin: int, end: int, values: np.ndarray, starts: np.ndarray, sizes: np.ndarray, first: np.ndarray,
    second: np.ndarray, shared: np.ndarray,
) -> None:
    """Pairs `begin` to `end`: how many values their two sorted sets share, by one merge whose
    steps are sums of comparisons, not branches (random hashes defeat a branch predictor)."""
    for pair in range(begin, end):
        i, j = starts[first[pair]], starts[second[pair]]
        i_end, j_end = i + sizes[first[pair]], j + sizes[second[pair]]
        count = 0
        while i < i_end and j < j_end:
            a, b = values[i], values[j]
            count += a == b
            i += a <= b
            j += b <= a
        shared[pair] = count


@loop
def joined_lengths(
    begin: int, end: int, values: np.ndarray, starts: np.ndarray, sizes: np.ndarray, lengths: np.ndarray,
    first: np.ndarray, second: np.ndarray, out: np.ndarray,
) -> None:
    """Pairs `begin` to `end`: the lengths of the words their two sorted sets of word numbers
    share, of those in the first set only and of those in the second only (`out[pair]`, three
    columns), each as the words joined by single spaces; `lengths[w]` is word w's length. By
    one merge of the two sets, as `count_shared`."""
    for pair in range(begin, end):
        i, j = starts[first[pair]], starts[second[pair]]
        i_end, j_end = i + sizes[first[pair]], j + sizes[second[pair]]
        shared = first_only = second_only = 0  # characters and one space after each word
        while i < i_end and j < j_end:
            a, b = values[i], values[j]
            if a == b:
                shared += lengths[a] + 1
                i, j = i + 1, j + 1
            elif a < b:
                first_only += lengths[a] + 1
                i += 1
            else:
                second_only += lengths[b] + 1
                j += 1
        for at in range(i, i_end):
            first_only += lengths[values[at]] + 1
        for at in range(j, j_end):
            second_only += lengths[values[at]] + 1
        out[pair, 0], out[pair, 1], out[pair, 2] = max(shared - 1, 0), max(first_only - 1, 0), max(second_only - 1, 0)


@loop
def utf8_shingle_hashes(
    data: np.ndarray, offsets: np.ndarray, lower: np.ndarray, is_word: np.ndarray, size: int, hashes: np.ndarray,
    shingle_counts: np.ndarray, word_counts: np.ndarray, undecided: np.ndarray,
) -> int:
    """The texts at `offsets` in the UTF-8 bytes `data`: each text's words, lower-cased into a
    scratch buffer and separated by one space, then the xxh32 (`_xxh32`, as `minhash_input`) of
    each run of `size` words (of all, if fewer) written to `hashes`. Returns how many were
    written; a text with a code point `lower` marks -1 is left `undecided`."""
    longest = 0
    for text in range(offsets.size - 1):
        longest = max(longest, offsets[text + 1] - offsets[text])
    scratch = np.empty(3 * longest + 4, dtype=np.uint8)  # a lower case takes at most 3 bytes
    starts, ends = np.empty(longest + 1, dtype=np.int64), np.empty(longest + 1, dtype=np.int64)
    written = 0
    for text in range(offsets.size - 1):
        at, end, length, words, inside, decided = offsets[text], offsets[text + 1], 0, 0, False, True
        while at < end:
            byte = np.int64(data[at])
            if byte < 0x80:
                point, at = byte, at + 1
            elif byte < 0xE0:
                point, at = ((byte & 0x1F) << 6) | (np.int64(data[at + 1]) & 0x3F), at + 2
            elif byte < 0xF0:
                point = ((byte & 0x0F) << 12) | ((np.int64(data[at + 1]) & 0x3F) << 6) | (np.int64(data[at + 2]) & 0x3F)
                at += 3
            else:
                decided = False
                break
            low = np.int64(lower[point])
            if low < 0:
                decided = False
                break
            if is_word[point]:
                if not inside:
                    if words:
                        scratch[length], length = 32, length + 1
                    starts[words], inside = length, True
                if low < 0x80:
                    scratch[length], length = low, length + 1
                elif low < 0x800:
                    scratch[length], scratch[length + 1] = 0xC0 | (low >> 6), 0x80 | (low & 0x3F)
                    length += 2
                else:
                    scratch[length], scratch[length + 1] = 0xE0 | (low >> 12), 0x80 | ((low >> 6) & 0x3F)
                    scratch[length + 2], length = 0x80 | (low & 0x3F), length + 3
            elif inside:
                ends[words], words, inside = length, words + 1, False
        if inside:
            ends[words], words = length, words + 1
        if not decided:
            undecided[text] = True
            continue
        word_counts[text] = words
        runs = 0 if words == 0 else max(words - size + 1, 1)
        shingle_counts[text] = runs
        for run in range(runs):
            first, last = starts[run], ends[min(run + size, words) - 1]
            hashes[written], written = _xxh32(scratch, first, last), written + 1
    return written


@loop
def min_hashes(
    begin: int, end: int, hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray
) -> None:
    """Sets `begin` to `end`: row s of `out` (filled with the uint32 maximum) becomes the minimum
    over the set's hashes h (`hashes[offsets[s]:offsets[s + 1]]`) of (a * fmix32(h) + b) mod 2^32
    for each permutation (a, b): datasketch's "affine32" MinHash of the set."""
    for s in range(begin, end):
        row = out[s]
        for at in range(offsets[s], offsets[s + 1]):
            value = np.uint64(hashes[at])  # fmix32, the MurmurHash3 finalizer datasketch mixes each hash with
            value ^= value >> np.uint64(16)
            value = (value * np.uint64(0x85EBCA6B)) & _MASK
            value ^= value >> np.uint64(13)
            value = (value * np.uint64(0xC2B2AE35)) & _MASK
            value ^= value >> np.uint64(16)
            for k in range(a.size):
                row[k] = min(row[k], np.uint32((np.uint64(a[k]) * value + np.uint64(b[k])) & _MASK))


@loop
def equal_values(
    begin: int, end: int, sketches: np.ndarray, first: np.ndarray, second: np.ndarray, equal: np.ndarray
) -> None:
    """Pairs `begin` to `end`: how many of the MinHash values of their two sketches (rows of
    `sketches`, `minhash.sketches`: a size, then the values) are equal, without a row copied."""
    for pair in range(begin, end):
        a, b = sketches[first[pair]], sketches[second[pair]]
        count = 0
        for k in range(1, a.size):
            count += a[k] == b[k]
        equal[pair] = count


# --- the story graph and story attachment (dedupe/cluster.py) ----------------------------------


@loop
def closed_neighbourhoods(nodes: int, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indptr and indices of the 0/1 CSR matrix of each node's closed neighbourhood (itself
    among them) over the distinct edges (low[i] < high[i]) sorted by (low, high), as
    `_distinct_edges` gives them, each row sorted: its smaller neighbours (in edge order, so
    ascending), itself, its larger ones. Two passes over the edges where scipy's COO matrix
    converted and sorted them, at every level of the chain split."""
    indptr = np.zeros(nodes + 1, dtype=np.int64)
    for edge in range(low.size):
        indptr[low[edge] + 1] += 1
        indptr[high[edge] + 1] += 1
    for node in range(nodes):
        indptr[node + 1] += indptr[node] + 1
    indices, fill = np.empty(indptr[nodes], dtype=np.int64), indptr[:-1].copy()
    for edge in range(low.size):
        indices[fill[high[edge]]] = low[edge]
        fill[high[edge]] += 1
    for node in range(nodes):
        indices[fill[node]] = node
        fill[node] += 1
    for edge in range(low.size):
        indices[fill[low[edge]]] = high[edge]
        fill[low[edge]] += 1
    return indptr, indices


@loop
def smallest_of_components(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of `nodes` numbered nodes, the smallest node of its connected component over the
    edges (a[i], b[i]): union-find whose roots are always the smaller node, so every node's
    parent is at most itself and a root is its component's smallest node."""
    parent = np.arange(nodes)
    for edge in range(a.size):
        x, y = a[edge], b[edge]
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for node in range(nodes):  # in order: a parent, smaller, is resolved first
        parent[node] = parent[parent[node]]
    return parent


@loop
def shared_neighbours(indptr: np.ndarray, indices: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """For each edge (low[i], high[i]): how many nodes the two ends' rows of a 0/1 CSR matrix with
    sorted indices share (a merge of the two sorted rows). What a sparse row gather and element-wise
    product gave, without building either."""
    out = np.zeros(low.size, dtype=np.int64)
    for edge in range(low.size):
        i, i_end = indptr[low[edge]], indptr[low[edge] + 1]
        j, j_end = indptr[high[edge]], indptr[high[edge] + 1]
        if i_end - i > j_end - j:
            i, i_end, j, j_end = j, j_end, i, i_end
        shared = 0
        for at in range(i, i_end):  # each of the shorter row's in the longer one: hubs cost a search, not a scan
            j = j + np.searchsorted(indices[j:j_end], indices[at])
            if j == j_end:
                break
            if indices[j] == indices[at]:
                shared += 1
                j += 1
        out[edge] = shared
    return out


@loop
def bridges(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which of the distinct edges (a[i], b[i]) of an undirected graph are bridges: Tarjan's
    lowpoints, by a depth-first search kept on an explicit stack (no recursion limit)."""
    degree = np.zeros(nodes + 1, dtype=np.int64)
    for edge in range(a.size):
        degree[a[edge] + 1] += 1
        degree[b[edge] + 1] += 1
    start = np.cumsum(degree)
    fill = start[:-1].copy()
    neighbour, edge_of = np.empty(2 * a.size, dtype=np.int64), np.empty(2 * a.size, dtype=np.int64)
    for edge in range(a.size):
        neighbour[fill[a[edge]]], edge_of[fill[a[edge]]] = b[edge], edge
        fill[a[edge]] += 1
        neighbour[fill[b[edge]]], edge_of[fill[b[edge]]] = a[edge], edge
        fill[b[edge]] += 1
    order, lowpoint = np.full(nodes, -1, dtype=np.int64), np.zeros(nodes, dtype=np.int64)
    parent_edge, next_slot = np.full(nodes, -1, dtype=np.int64), start[:-1].copy()
    stack = np.empty(nodes, dtype=np.int64)
    out = np.zeros(a.size, dtype=np.bool_)
    seen = 0
    for root in range(nodes):
        if order[root] >= 0:
            continue
        order[root] = lowpoint[root] = seen
        seen += 1
        stack[0], depth = root, 1
        while depth:
            node = stack[depth - 1]
            if next_slot[node] < start[node + 1]:
                slot = next_slot[node]
                next_slot[node] += 1
                other, edge = neighbour[slot], edge_of[slot]
                if edge == parent_edge[node]:
                    continue
                if order[other] < 0:
                    order[other] = lowpoint[other] = seen
                    seen += 1
                    parent_edge[other] = edge
                    stack[depth], depth = other, depth + 1
                else:
                    lowpoint[node] = min(lowpoint[node], order[other])
            else:
                depth -= 1
                if depth:
                    up = stack[depth - 1]
                    lowpoint[up] = min(lowpoint[up], lowpoint[node])
                    if lowpoint[node] > order[up]:
                        out[parent_edge[node]] = True
    return out


@loop
def pair_products(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
    other_indptr: np.ndarray, other_indices: np.ndarray, other_data: np.ndarray, rows: np.ndarray, other_rows: np.ndarray,
) -> np.ndarray:
    """For each pair: the dot product of row rows[i] of one CSR matrix (sorted indices) and row
    other_rows[i] of another, summed from 0.0 in column order, as scipy's sparse product sums each
    entry: the same floats, for the pairs asked only. The pairs are taken by their first row, whose
    entries are read, column by column in order, down that column of the other rows asked (made
    here), into one running total per other row. A story's candidates are hundreds of larger
    stories and its row a dozen keywords: spreading each other row once and reading every pair's
    first row against it read a random row per pair, 4-5x slower (benchmarks/README.md, session 14)."""
    others = other_indptr.size - 1
    asked = np.zeros(others, dtype=np.bool_)
    for pair in range(rows.size):
        asked[other_rows[pair]] = True
    columns = max(indices.max() + 1 if indices.size else 0, other_indices.max() + 1 if other_indices.size else 0)
    column_start = np.zeros(columns + 1, dtype=np.int64)  # the asked other rows by column (CSC)
    for other in range(others):
        if asked[other]:
            for at in range(other_indptr[other], other_indptr[other + 1]):
                column_start[other_indices[at] + 1] += 1
    column_start = np.cumsum(column_start)
    fill = column_start[:-1].copy()
    column_row, column_data = np.empty(column_start[-1], dtype=np.int64), np.empty(column_start[-1], dtype=np.float64)
    for other in range(others):
        if asked[other]:
            for at in range(other_indptr[other], other_indptr[other + 1]):
                column = other_indices[at]
                column_row[fill[column]], column_data[fill[column]] = other, other_data[at]
                fill[column] += 1
    first = np.zeros(indptr.size, dtype=np.int64)  # the pairs counted, then sorted, by first row
    for pair in range(rows.size):
        first[rows[pair] + 1] += 1
    first = np.cumsum(first)
    order, fill = np.empty(rows.size, dtype=np.int64), first[:-1].copy()
    for pair in range(rows.size):
        order[fill[rows[pair]]] = pair
        fill[rows[pair]] += 1
    total, of_row = np.zeros(others, dtype=np.float64), np.full(others, -1, dtype=np.int64)
    out = np.zeros(rows.size, dtype=np.float64)
    for row in range(indptr.size - 1):
        if first[row] == first[row + 1]:
            continue
        for at in range(indptr[row], indptr[row + 1]):
            column, value = indices[at], data[at]
            for slot in range(column_start[column], column_start[column + 1]):
                other = column_row[slot]
                if of_row[other] != row:  # a total of an earlier row: start again from 0.0
                    of_row[other], total[other] = row, 0.0
                total[other] += value * column_data[slot]
        for slot in range(first[row], first[row + 1]):
            pair = order[slot]
            if of_row[other_rows[pair]] == row:
                out[pair] = total[other_rows[pair]]
    return out


@loop
def best_of_stories(
    stories: int, story: np.ndarray, other: np.ndarray, fit: np.ndarray, claimed: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per story of `stories` numbered ones: the pair it prefers (claimed first, then the best fit,
    then the larger other, then the smaller other; -1: no pair) and the best fit among its other
    pairs (-inf: none; all of them when the preferred one is not claimed). One pass where a sort
    of the pairs by those keys took most of the attachment's time."""
    chosen = np.full(stories, -1, dtype=np.int64)
    for pair in range(story.size):
        s = story[pair]
        held = chosen[s]
        if held < 0:
            chosen[s] = pair
            continue
        if claimed[pair] != claimed[held]:
            better = claimed[pair]
        elif fit[pair] != fit[held]:
            better = fit[pair] > fit[held]
        elif size[other[pair]] != size[other[held]]:
            better = size[other[pair]] > size[other[held]]
        else:
            better = other[pair] < other[held]
        if better:
            chosen[s] = pair
    rest = np.full(stories, -np.inf)
    for pair in range(story.size):
        s = story[pair]
        if pair != chosen[s] or not claimed[pair]:
            rest[s] = max(rest[s], fit[pair])
    return chosen, rest, np.flatnonzero(chosen >= 0)


@loop
def candidate_pairs(
    indptr: np.ndarray, indices: np.ndarray, posting_start: np.ndarray, posting: np.ndarray,
    rows: np.ndarray, size: np.ndarray, ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pairs (story, other) of a story in `rows` and another with an indexed keyword
    in common (the story's keywords: a CSR matrix's rows; each keyword's indexed stories:
    `posting[posting_start[k]:posting_start[k + 1]]`, largest first) and at least `ratio` times
    its size. A posting is read only down to the smallest story large enough, where the sparse
    product these replaced made every pair, then dropped most."""
    mark = np.full(size.size, -1, dtype=np.int64)
    story_out, other_out = np.empty(4 * rows.size + 16, dtype=np.int64), np.empty(4 * rows.size + 16, dtype=np.int64)
    found = 0
    for story in rows:
        least = ratio * size[story]
        for at in range(indptr[story], indptr[story + 1]):
            keyword = indices[at]
            for slot in range(posting_start[keyword], posting_start[keyword + 1]):
                other = posting[slot]
                if size[other] < least:
                    break
                if other == story or mark[other] == story:
                    continue
                mark[other] = story
                if found == story_out.size:
                    story_out, other_out = np.concatenate((story_out, story_out)), np.concatenate((other_out, other_out))
                story_out[found], other_out[found] = story, other
                found += 1
    return story_out[:found], other_out[:found]
