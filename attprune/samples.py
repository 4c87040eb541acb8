"""A few built-in labelled sentences (written for attprune) for the demo, tests and benchmarks.

Label 1: positive review, 0: negative.  Real task data comes from the task pack.
"""

POSITIVE = [
    "A warm, funny and beautifully acted film that earns every one of its tears.",
    "The direction is confident and the story never loses its grip on you.",
    "One of the most charming comedies of the year, with a terrific cast.",
    "Gorgeous photography and a score that lingers long after the credits.",
    "A smart script that trusts its audience and rewards their attention.",
    "The lead gives a fearless performance that anchors the whole movie.",
    "It is tender without being sentimental, and often very funny.",
    "A thrilling, inventive adventure that the whole family will enjoy.",
    "Every scene feels alive, and the ending is quietly devastating.",
    "I left the theatre smiling; this is filmmaking at its most generous.",
    "An intelligent thriller whose twists feel earned rather than cheap.",
    "The dialogue crackles and the actors clearly relish every line.",
    "A moving portrait of friendship, told with grace and humour.",
    "Sharp, stylish and surprisingly heartfelt from start to finish.",
    "The best animated feature in years: witty, wise and lovely to look at.",
    "A small film with a big heart and a wonderful sense of place.",
]
NEGATIVE = [
    "A dull, plodding mess that wastes a talented cast.",
    "The plot makes no sense and the jokes never land.",
    "Two hours of noise with nothing to say and no one to care about.",
    "The acting is wooden and the script is painfully clumsy.",
    "It drags on forever and the twist is obvious from the first scene.",
    "A lazy sequel that repeats the original's worst habits.",
    "Badly edited, badly written and instantly forgettable.",
    "The characters are thin and the dialogue is embarrassing.",
    "I checked my watch every ten minutes; a tedious, joyless film.",
    "Loud, incoherent and far too long for such a flimsy story.",
    "A muddled thriller with no tension and a silly ending.",
    "The humour is crude and the pacing is sluggish throughout.",
    "Pretentious and empty, it mistakes boredom for depth.",
    "Even the fine score cannot save this clumsy, lifeless drama.",
    "A cynical cash grab with no charm and no surprises.",
    "The special effects are cheap and the story is worse.",
]

SENTENCES = [s for pair in zip(POSITIVE, NEGATIVE) for s in pair]
LABELS = [label for _ in POSITIVE for label in (1, 0)]
