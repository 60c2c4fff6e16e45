"""The pool: the best prompts found so far, and which one the next step starts from.

The rule, in full:
- the pool holds the baseline, then every accepted candidate, ranked by val score (a tie
  goes to the newer prompt), and keeps the best `size`; the worst drops out;
- a step starts from the member that has started the fewest steps, the better-ranked one
  first among equals;
- a candidate is accepted against the prompt its step started from (the accept rule), so
  it ranks at least as high as that prompt and always joins.

With size 1 this is plain descent: every step starts from the last accepted prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prompt_descent.core.config import Prompt, SplitScore


@dataclass
class Member:
    prompt: Prompt
    val: SplitScore
    joined: int  # the order in which members joined: ties in val go to the newer one
    starts: int = 0


@dataclass
class Pool:
    size: int
    members: list[Member] = field(default_factory=list)  # best first
    joined: int = 0

    def add(self, prompt: Prompt, val: SplitScore) -> None:
        self.joined += 1
        self.members.append(Member(prompt, val, self.joined))
        self.members.sort(key=lambda m: (-m.val.score, -m.joined))
        del self.members[self.size :]

    def start(self) -> Member:
        """The member the next step starts from, counted as started."""
        member = min(self.members, key=lambda m: m.starts)  # min keeps the best-ranked tie
        member.starts += 1
        return member

    @property
    def best(self) -> Member:
        return self.members[0]
