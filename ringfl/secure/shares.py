"""Per-attempt secrets of one peer in the secure sum, and the sealed shares that carry
them.

Every attempt a of a round draws, for each peer, a fresh ephemeral X25519 key e_i^a (its
pairwise masks come from it) and a fresh self-mask seed b_i^a. A peer on the attempt's
self-mask committee Shamir-shares b_i^a t-of-n and seals share j for peer j with AES-256-GCM
under the directed pairwise key (i → j, purpose "share-enc") of its long-term X25519 key,
bound to (session, round, attempt). Nothing is reused across attempts: a retried round
masks with new keys and new seeds, so no keystream ever masks two plaintexts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ringfl.secure import shamir
from ringfl.secure.keys import KEY_BYTES, PeerKeys, derive_pairwise, key_agreement


class LongTermKeys:
    """This peer's long-term key and the X25519 agreements with the others (one each,
    cached: they serve every round and attempt through HKDF's binding)."""

    def __init__(self, peer: int, keys: PeerKeys, public_keys: dict[int, bytes]) -> None:
        self.peer = peer
        self.keys = keys
        self.public_keys = public_keys
        self._shared: dict[int, bytes] = {}

    def share_key(
        self, other: int, *, sender: int, session: int, round: int, attempt: int
    ) -> bytes:
        shared = self._shared.get(other)
        if shared is None:
            shared = key_agreement(self.keys, self.public_keys[other], other)
            self._shared[other] = shared
        return derive_pairwise(
            shared,
            self.peer,
            self.public_keys[self.peer],
            other,
            self.public_keys[other],
            session=session,
            round=round,
            attempt=attempt,
            purpose="share-enc",
            sender=sender,
        )


class AttemptSecrets:
    """One peer's fresh secrets for one attempt: ephemeral key, self-mask seed, and the
    pairwise mask keys derived with the other members' ephemeral public keys."""

    def __init__(
        self,
        peer: int,
        attempt: int,
        entropy: Callable[[int], bytes],
        *,
        session: int,
        round: int,
    ) -> None:
        self.peer = peer
        self.attempt = attempt
        self.session = session
        self.round = round
        self._eph = X25519PrivateKey.from_private_bytes(bytes(entropy(KEY_BYTES)))
        self.eph_public = self._eph.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.self_seed = bytes(entropy(KEY_BYTES))
        self.eph_publics: dict[int, bytes] = {peer: self.eph_public}
        self.my_shares: dict[int, bytes] = {}  # committee member → my share of its seed
        self._pair_keys: dict[int, bytes] = {}

    def context(self, origin: int) -> bytes:
        """Associated data of `origin`'s sealed shares: the attempt and its ephemeral key."""
        return struct.pack("<I", self.attempt) + self.eph_publics[origin]

    def pair_key(self, other: int) -> bytes:
        """The mask key shared with `other` for this attempt (both derive the same)."""
        key = self._pair_keys.get(other)
        if key is None:
            key = derive_pairwise(
                key_agreement(self._eph, self.eph_publics[other], other),
                self.peer,
                self.eph_public,
                other,
                self.eph_publics[other],
                session=self.session,
                round=self.round,
                attempt=self.attempt,
                purpose="mask",
            )
            self._pair_keys[other] = key
        return key

    def sealed_shares(
        self,
        ring: list[int],
        live: set[int],
        threshold: int,
        long_term: LongTermKeys,
        entropy: Callable[[int], bytes],
    ) -> bytes:
        """Shares of this attempt's self seed, share j sealed for ring[j] (random filler
        in the slots of itself and of peers not live)."""
        shares = shamir.split_secret(self.self_seed, threshold, len(ring))
        parts = []
        for i, p in enumerate(ring):
            if p == self.peer or p not in live:
                parts.append(bytes(entropy(shamir.SEALED_BYTES)))
                continue
            key = long_term.share_key(
                p, sender=self.peer, session=self.session, round=self.round, attempt=self.attempt
            )
            parts.append(
                shamir.seal_share(
                    key,
                    shares[i],
                    session=self.session,
                    round=self.round,
                    sender=self.peer,
                    recipient=p,
                    context=self.context(self.peer),
                )
            )
        self.my_shares[self.peer] = shares[ring.index(self.peer)]
        return b"".join(parts)

    def open_share(
        self, origin: int, sealed_all: bytes, slot: int, long_term: LongTermKeys
    ) -> None:
        """Open and keep this peer's share (slot `slot`) of `origin`'s seed."""
        at = shamir.SEALED_BYTES * slot
        key = long_term.share_key(
            origin, sender=origin, session=self.session, round=self.round, attempt=self.attempt
        )
        self.my_shares[origin] = shamir.open_share(
            key,
            sealed_all[at : at + shamir.SEALED_BYTES],
            session=self.session,
            round=self.round,
            sender=origin,
            recipient=self.peer,
            context=self.context(origin),
        )
