"""An adversarial corpus for the course's checkers: answers a learner would plausibly write.

Each ``corpus_<section>.py`` holds, per exercise, wrong implementations (each tagged with the
diagnosis that names its mistake) and correct alternatives (different from the course's
solution but valid). ``test_corpus.py`` asserts every wrong one fails with its diagnosis and
every correct one passes; ``python -m tests.checks.adversarial.measure`` prints the table and
the fraction of wrong answers that fall through to a generic diagnosis.
"""
