"""Pictures: :mod:`.preview` (the 3x3 grid of augmented training images, per op or as a run of a
configuration trains on them), :mod:`.dense` (masks and boxes drawn over the mixed images) and
:mod:`.demo` (the three ops on generated images, offline). Matplotlib is imported only as a picture is
drawn."""
