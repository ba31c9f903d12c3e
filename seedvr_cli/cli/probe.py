"""``seedvr probe``: what the tool sees in a media file. (Filled in by the media work.)"""
