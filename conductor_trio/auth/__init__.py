"""The conductor's credentials besides the shared token (issue 25).

Owns: device tokens (:mod:`.devices`: stored hashed, mode 600, scoped, revocable), pairing codes
(:mod:`.pairing`: one use, 5 minutes, rate-limited) and one-tap action links (:mod:`.actions`:
signed, approval-scoped, single-use, at most 15 minutes), held together by
:class:`.node.NodeAuth`. The rules that apply them to requests are in
:mod:`conductor_trio.web.access` (one place for every credential).

May import: ``conductor_trio.config`` and below, ``codexd_trio.base``. Never the web layer, the
service or Quart.
"""
