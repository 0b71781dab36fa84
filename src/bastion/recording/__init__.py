"""Session recordings (issue 7, part 2).

* :mod:`.asciicast` — the pure asciicast v2 codec (what a recording *is*).
* :mod:`.player` — the pure playback schedule (speed, idle-gap cap) for ``bsh play``.
* :mod:`.store` — where auth keeps recordings: :class:`~.store.RecordingStore`, with a local
  directory implementation; :mod:`.s3` stores them in S3-compatible object storage.
* :mod:`.spool` — the node writes every recording to a local spool directory first (flushed per
  event, fsync'd), so a node restart or an auth outage loses nothing.
* :mod:`.uploader` — moves finished spool files to auth with retry and backoff.

The node side plugs into the session data path as a
:class:`~bastion.agent.session.SessionObserver` (:mod:`bastion.agent.recorder`).
"""

__all__: list[str] = []
