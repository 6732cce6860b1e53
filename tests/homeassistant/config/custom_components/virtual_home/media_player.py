"""Media players: play/pause/stop, volume, next/previous track through a playlist, on/off,
and play_media (the media id becomes the title)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.media_player import (
    MediaPlayerEntity,
    MediaPlayerEntityFeature,
    MediaPlayerState,
    MediaType,
)

from .entity import VirtualEntity, added

_F = MediaPlayerEntityFeature


class VirtualMediaPlayer(VirtualEntity, MediaPlayerEntity):
    _attr_supported_features = (
        _F.PLAY | _F.PAUSE | _F.STOP | _F.VOLUME_SET | _F.VOLUME_STEP | _F.VOLUME_MUTE
        | _F.NEXT_TRACK | _F.PREVIOUS_TRACK | _F.TURN_ON | _F.TURN_OFF | _F.PLAY_MEDIA
    )  # fmt: skip
    _attr_media_content_type = MediaType.MUSIC

    def restore(self) -> None:
        self._attr_state = MediaPlayerState(self.spec.get("state", "idle"))
        self._attr_volume_level = self.spec.get("volume_level", 0.5)
        self._attr_is_volume_muted = False
        self.playlist: list[str] = list(self.spec.get("playlist", ["Track 1"]))
        self._track(0)

    def _track(self, index: int) -> None:
        self.index = index % len(self.playlist)
        self._attr_media_title = self.playlist[self.index]
        self._attr_media_content_id = self.playlist[self.index]

    def _play(self, state: MediaPlayerState) -> None:
        self._attr_state = state
        self.changed()

    async def async_media_play(self) -> None:
        self._play(MediaPlayerState.PLAYING)

    async def async_media_pause(self) -> None:
        self._play(MediaPlayerState.PAUSED)

    async def async_media_stop(self) -> None:
        self._play(MediaPlayerState.IDLE)

    async def async_turn_on(self) -> None:
        self._play(MediaPlayerState.IDLE)

    async def async_turn_off(self) -> None:
        self._play(MediaPlayerState.OFF)

    async def async_media_next_track(self) -> None:
        self._track(self.index + 1)
        self.changed()

    async def async_media_previous_track(self) -> None:
        self._track(self.index - 1)
        self.changed()

    async def async_set_volume_level(self, volume: float) -> None:
        self._attr_volume_level = volume
        self.changed()

    async def async_mute_volume(self, mute: bool) -> None:
        self._attr_is_volume_muted = mute
        self.changed()

    async def async_play_media(self, media_type: str, media_id: str, **kwargs: Any) -> None:
        self._attr_media_title = self._attr_media_content_id = media_id
        self._play(MediaPlayerState.PLAYING)


async_setup_entry = added(VirtualMediaPlayer, "media_player")
