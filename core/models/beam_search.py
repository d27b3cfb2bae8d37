"""Batched beam search bookkeeping: running beams, their scores, finished hypotheses.

The captioner asks the model for next-token log-probabilities; this keeps which images are
still searching, extends their beams by the best tokens and picks each image's best
hypothesis by length-normalised score. Row `i * beams + b` holds beam b of image i.
"""

from __future__ import annotations

import math

import torch

Hypothesis = tuple[float, list[int]]  # (length-normalised score, token ids after the start)


class BeamSearchState:
    """Running beams and finished hypotheses of a batched beam search."""

    def __init__(self, images: int, beams: int, *, start_id: int, end_id: int,
                 length_penalty: float, device: torch.device) -> None:
        self.image_count = images
        self.beams = beams
        self.end_id = end_id
        self.length_penalty = length_penalty
        self.seqs = torch.full((images * beams, 1), start_id, dtype=torch.long, device=device)
        # Only beam 0 is live at first, so the first step does not pick k copies of one token.
        self.scores = torch.full((images, beams), float("-inf"), dtype=torch.float64)
        self.scores[:, 0] = 0.0
        self.finished: list[list[Hypothesis]] = [[] for _ in range(images)]
        self.done = [False] * images

    def _normalised(self, score: float, length: int) -> float:
        return score / math.pow(length, self.length_penalty)

    def _add_finished(self, image: int, score: float, ids: list[int]) -> None:
        """Keep the `beams` best finished hypotheses of `image`."""
        finished = self.finished[image]
        finished.append((score, ids))
        finished.sort(key=lambda h: -h[0])  # stable: equal scores keep the earlier hypothesis
        del finished[self.beams:]

    def advance(self, images: list[int], rows: torch.Tensor, logp: torch.Tensor,
                step: int) -> list[int]:
        """Extend the beams of `images` (whose rows are `rows`) by one token.

        Returns, for each row of `rows` after the step, the position in `rows` of the row it
        grew from: a decoder's cached state follows its beams by it.
        """
        k, vocab = self.beams, logp.shape[-1]
        cand = (self.scores[images].to(logp.device).reshape(-1, 1) + logp).view(len(images), -1)
        top = cand.topk(min(2 * k, cand.shape[1]), dim=1)
        top_scores: list[list[float]] = top.values.cpu().tolist()
        top_ids: list[list[int]] = top.indices.cpu().tolist()
        parents = self.seqs[rows]
        prev = parents.tolist()
        src: list[int] = []  # for each new row, its parent's position in `rows`
        toks: list[int] = []
        length = step + 1  # tokens after the start token, the end token included
        for a, image in enumerate(images):
            picked: list[tuple[int, int, float]] = []
            for rank, (score, flat) in enumerate(zip(top_scores[a], top_ids[a], strict=True)):
                if score == float("-inf") or len(picked) == k:
                    break
                beam, tok = divmod(flat, vocab)
                if tok == self.end_id:
                    if rank < k:  # an end token outside the top k would never have been kept
                        self._add_finished(image, self._normalised(score, length),
                                           prev[a * k + beam][1:])
                    continue
                picked.append((beam, tok, score))
            while len(picked) < k:  # tiny vocabularies: park dead beams at -inf
                picked.append((0, self.end_id, float("-inf")))
            for b, (beam, tok, score) in enumerate(picked):
                src.append(a * k + beam)
                toks.append(tok)
                self.scores[image, b] = score
            best_running = self._normalised(picked[0][2], length)
            finished = self.finished[image]
            full = len(finished) == k and finished[-1][0] >= best_running
            if full or best_running == float("-inf"):  # or no live beam is left
                self.done[image] = True
        device = self.seqs.device
        grown = torch.cat([parents[torch.tensor(src, device=device)],
                           torch.tensor(toks, device=device)[:, None]], dim=1)
        seqs = torch.cat([self.seqs, torch.full_like(self.seqs[:, :1], self.end_id)], dim=1)
        seqs[rows] = grown
        self.seqs = seqs
        return src

    def finish(self) -> list[list[int]]:
        """Best hypothesis per image; beams still running at the length limit count too."""
        length = self.seqs.shape[1] - 1
        rows = self.seqs.tolist()
        out: list[list[int]] = []
        for i in range(self.image_count):
            if not self.done[i]:
                for b in range(self.beams):
                    score = float(self.scores[i, b])
                    if score != float("-inf"):
                        self._add_finished(i, self._normalised(score, length),
                                           rows[i * self.beams + b][1:])
            out.append(list(self.finished[i][0][1]) if self.finished[i] else [])
        return out
