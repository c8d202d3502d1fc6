"""Every text restyle says to people, in one place (Slack mrkdwn; the terminal prints it as is)."""

HELP = """*restyle* — drop a photo of a model, then tell me what to change, in the photo's thread:
• `make the skirt a red floral maxi` — new looks for a garment (4 variations)
• `try #2 in denim`, `#3 but longer` — iterate on a variation
• `8 more like that` — more candidates with the same prompt
• `the top white and the skirt black` — several garments at once
• `fav 2` (or react ⭐ ❤️ 👍) — mark a favourite · `use 2` — edit from #2 from now on · `undo` — back to the previous base · `start over` — back to the original photo
• `#2 info` — how #2 was made: seed, prompt, settings
• `settings steps=40 guidance=8 seed=7 count=4 strength=0.65` — this thread's settings · `make the mask bigger` / `tighter mask` (or `grow=24 threshold=0.3`) — when the mask misses or overshoots
• `/restyle batch 8 <prompt>` · `/restyle favorites` · `/restyle settings …` · `/restyle help`"""

SCALED_PHOTO = ("This photo is {size} ({mp:.0f} megapixels), more than I edit at full size: I'm working on a "
                "{working} copy, and the variations will be that size.")
GOT_PHOTO = "Got the photo! Tell me what to change — e.g. _make the skirt a red floral maxi_."
GLAD = "Glad you like it! React ⭐ on the variations to keep, or say _fav 2_."
WELCOME = "You're welcome! Tell me what to change next, or react ⭐ to keep a variation."
CANT_REMOVE = ("I can't take the {what} out of the picture — I restyle what is there. Try _make the {what} black_ "
               "or _make the {what} thinner_.")
CAPPED = " ({cap} is the most I make in one go.)"
UNKNOWN = "Sorry, I didn't catch that. Try _make the skirt red_, _try #2 in denim_, _fav 2_ — or say _help_."
NO_GARMENT = ("Which garment should I change? Name it, e.g. _make the *skirt* red_ or "
              "_turn her pants into a pleated skirt_.")
NOT_FOUND = ("I couldn't find {what} in this photo. Try another word (dress, top, pants …), a lower mask "
             "threshold (_settings threshold=0.25_), or a photo where it is clearly visible.")
NO_THREAD = "Share a photo first (or reply in a photo's thread), then tell me what to change."
NO_VARIATION = "There is no #{number} in this thread yet."
GONE_VARIATION = "That variation isn't in this thread (any more) — its buttons and reactions do nothing now."
NO_PREVIOUS = "There is nothing to repeat yet — describe a change first, e.g. _make the skirt red_."
FAVORITED = "⭐ #{number} saved to favourites."
UNFAVORITED = "#{number} removed from favourites."
NO_FAVORITES = "No favourites in this thread yet — react ⭐ ❤️ 👍 on a variation or say _fav 2_."
FAVORITES = "Favourites in this thread: {numbers}"
USING = "Now editing from #{number}. Say _undo_ to go back."
WHICH = "Which variation? Say _use 2_ — the numbers are on each picture and on the contact sheet."
INFO = ("#{number}: seed {seed}, made from {base} by repainting the {garments} as _{prompt}_{negative}; {how}. "
        "Say _settings seed={seed}_ to start the next variations from the same seed.")
UNDONE = "Back to {what}."
NOTHING_TO_UNDO = "Nothing to undo: edits already start from the original photo."
SETTINGS = "Settings for this thread: {summary}"
BAD_SETTING = "I can't use `{key}={value}`: {why}"
STARTING = "On it…"
QUEUED = "Queued: {n} request{s} ahead of yours — I'll start as soon as I can."
WORKING = "Working on it… {done}/{total}"
FINDING = "Finding the {what}…"
GENERATING = "Generating {n} variation{s} of the {what}…"
DONE = "Here are {n} variation{s} of the {what}: {numbers}. React ⭐ to keep one, or say _use 2_, _try #2 in denim_."
SOME_REJECTED = " ({k} candidate{s} came out blank and were dropped.)"
ALL_REJECTED = "All candidates came out blank (the model's output was black or invalid). Try again or rephrase."
BAD_IMAGE = "I couldn't read that file as a photo: {why}"
NOT_AN_IMAGE = "That file isn't an image I can use ({what}). Share a JPEG, PNG or WebP photo."
TOO_LARGE = "That photo is too large: {why}"
TOO_SMALL = "That photo is only {size} pixels: share one at least {side} pixels on each side."
MODEL_DOWN = ("The styling model is not reachable right now ({why}). Nothing was lost — try again in a minute.")
MODEL_REFUSED = "The model refused the request: {why}"
MODEL_MISSING = "The model weights are not available: {why}"
INTERRUPTED = ("My last job in this thread (_{text}_) was interrupted by a restart before it finished. "
               "Say it again to retry.")
BUSY = "I'm busy with other requests right now — please try again in a minute."
BATCH_STARTED = "Starting a batch of {n} for _{prompt}_ — I'll post here when it's done."
BATCH_CAPPED = " (capped at {cap})"
FAILED = "Something went wrong on my side while generating; nothing was saved. Please try again."

# Slack-specific
DOWNLOAD_FAILED = "I couldn't download that photo from Slack ({why}). Please share it again."
NOT_POSTED = ("I couldn't post {what} here ({why}). Nothing is lost: they are saved in this thread and answer to "
              "their numbers (_fav 2_, _use 2_, _#2 info_).")
FILE_HIDDEN = ("Slack hides that file from apps (the workspace's message-history limit), so I can't open it. "
               "Share the photo again.")
LOGIN_PAGE = ("Slack answered with a sign-in page instead of the photo — the app probably lacks the `files:read` "
              "scope. Ask a workspace admin to reinstall restyle, then share the photo again.")
PHOTO_IN_THREAD = ("Each photo gets its own thread: post the new photo as a new message in the channel "
                   "(not as a reply here) and I'll start a thread for it.")
UNKNOWN_COMMAND = "I don't know `/restyle {sub}`. Here is what I can do:\n\n"
BATCH_USAGE = ("Usage: `/restyle batch 8 pastel floral skirt` (or `/restyle batch 8` to repeat the last look) — run it "
               "in a channel that has a photo thread.")
VARIATION_HINT = "React ⭐ ❤️ 👍 on this message to keep it."
DONE_STATUS = "Done."
