"""The adapter lifecycle on a device: releases, the installed set, the shipped adapter, the signed
updater, and the canary that decides a swap."""
