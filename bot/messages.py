"""Every text restyle says to people, in one place (Slack mrkdwn; the terminal prints it as is)."""

ASK = ("Just checking before I spend GPU time — I understood: {summary}. Generate? "
       "(say _yes_ or _no_, or use the buttons)")
TOPIC_NAMES = {"background": "the background", "hair": "hair", "makeup": "make-up", "jewellery": "jewellery",
               "pose": "the pose", "body": "the model's body", "lighting": "the lighting"}
ASK_TOPIC = " I can't change {what}, only the clothes: that part I'd leave as it is."
CANCELLED = "OK, nothing generated. Tell me what you'd like instead — e.g. _make the skirt red_."
NOTHING_PENDING = "There is nothing waiting for a yes or no — tell me what to change, e.g. _make the skirt red_."
QUESTION_GONE = "That question has been answered or replaced by a newer message — tell me what to change."
HOWTO = {
    "reset": "Say _start over_ (or _back to the original_) and the next edit starts from the original photo again.",
    "undo": "Say _undo_ to go back to the picture you were editing before (_start over_ goes back to the original).",
    "favorite": "React ⭐ ❤️ 👍 on a variation, press its *Favourite* button, or say _fav 2_; _favourites_ lists them.",
    "use": "Say _use 2_ (or press *Use as base*): later edits start from #2. _undo_ goes back.",
    "batch": "Say _12 more like that_ or use `/restyle batch 12 <prompt>` (up to {max_batch} at once).",
    "settings": ("Say _settings_ to see this thread's settings, or e.g. _settings steps=40 guidance=8 seed=7 count=4 "
                 "strength=0.65_ — steps: quality vs. speed; guidance: how literally the prompt is followed; strength: "
                 "how far an iteration (#2 but …) may move from #2; count: variations per request."),
    "more": "Say _4 more like that_ or _more like #3_, or press *More like this* under a variation.",
    "looks": "Say _use the resort look_ or _settings look=resort_ (_look=none_: the base model).",
    "info": "Say _#2 info_: the seed, the picture it came from, the prompt and the settings of #2.",
    "restyle": "Name the garment and the change: _make the skirt a red floral maxi_, _turn her jeans into a pleated skirt_.",
}
UNSUPPORTED = {
    "background": ("Tell me the background you want and I'll repaint everything around the person (she stays exactly "
                   "as she is): _put her on a plain white background_, _studio grey backdrop_, _a paris street_. I don't "
                   "blur or relight the background that is there."),
    "hair": "I can't change hair — only garments. Try _make the top cream_ or _try #2 in denim_.",
    "makeup": "I can't change make-up — only garments.",
    "jewellery": ("I can't add or change jewellery, glasses or watches — they are too small for my garment masks. "
                  "Bags, belts, hats, scarves and shoes I can do."),
    "pose": "I can't change the pose — I keep the photo and repaint garments only.",
    "body": "I don't change the model's body, face or skin — only the clothes.",
    "lighting": "I can't relight the photo — only garments change.",
    "upscale": ("Say _upscale #3_ (or press *Upscale* under a variation) and I'll bring #3's garment to the photo's "
                "full resolution — one variation at a time; the rest of the picture stays exactly as it is."),
    "compare": ("Name the variations and I'll put them side by side — _#2 vs #5_, _compare 1 and 3_. Which one works "
                "best is your call: I can't judge looks."),
    "lookbook": ("I can't send files outside this thread or make slides. Say _lookbook_ (or `/restyle lookbook`) for a "
                 "PDF of the favourites and a ZIP of their full-resolution PNGs, here in the thread."),
    "link": "I can't open links — share the photo itself in the channel and I'll start a thread for it.",
    "other_photos": ("I work on one photo per thread: post each photo as its own message and say what to change in "
                     "its thread."),
    "removal": ("I can't take the {what} out of the picture — I restyle what is there. Try _make the {what} black_ "
                "or _make the {what} thinner_."),
    "question": "I can only answer questions about how a variation was made (_#2 info_) — or say _help_.",
    "other": "That's not something I can do — I repaint garments in this photo. Say _help_ to see what I can do.",
}

GOT_SWATCH = ("Got it — I'll keep this as the thread's swatch. Say _use this print on the dress_ (or _the skirt in "
              "this fabric_); _a bit less like the swatch_ / _more like the swatch_ after that. (A new photo to work on? "
              "Post it as a new message in the channel and I'll start a thread for it.)")
NO_SWATCH = ("There's no swatch in this thread yet — share the swatch or print image here in the thread, then say "
             "_use this print on the dress_.")
NO_SWATCH_TURN = "The last variations weren't made after a swatch — say _use this print on the skirt_ first."
UPSCALE_WHICH = ("The original photo is already at its own full resolution — name a variation: _upscale #3_.")
UPSCALE_NO_MASK = ("I don't know where #{number}'s garment is (it was made before I kept masks, or by another step), "
                   "so I can't upscale it — restyle it again and upscale the new one.")
UPSCALING = "Bringing #{number} to full resolution…"
ALREADY_FULL_RES = ("#{number}'s garment is already at the photo's full resolution (it was generated at that size): "
                    "upscaling would add nothing.")
UPSCALED = ("Here is #{new}: #{number} with its garment brought to the photo's full resolution ({size}); everything "
            "away from the garment is #{number}'s own pixels. The sheet shows the garment close-up, before and after.")

HELP = """*restyle* — drop a photo of a model, then tell me what to change, in the photo's thread:
• `make the skirt a red floral maxi` — new looks for a garment (4 variations)
• `try #2 in denim`, `#3 but longer` — iterate on a variation
• `8 more like that` — more candidates with the same prompt
• `the top white and the skirt black` — several garments at once
• `fav 2` (or react ⭐ ❤️ 👍) — mark a favourite · `use 2` — edit from #2 from now on · `undo` — back to the previous base · `start over` — back to the original photo
• `#2 info` — how #2 was made: seed, prompt, settings
• `#2 vs #5` (or `compare 1 and 3`) — side by side, with a close-up of the garment · `lookbook` — a PDF of the favourites and a ZIP of their PNGs
• `upscale #3` — #3's garment at the photo's full resolution · `put her on a plain white background` — a new background, the person untouched
• share a swatch or print in the thread, then `use this print on the dress` (`a bit less like the swatch` to soften it)
• `settings steps=40 guidance=8 seed=7 count=4 strength=0.65` — this thread's settings · `make the mask bigger` / `tighter mask` (or `grow=24 threshold=0.3`) — when the mask misses or overshoots
• `/restyle batch 8 <prompt>` · `/restyle favorites` · `/restyle lookbook` · `/restyle settings …` · `/restyle usage` · `/restyle limits` · `/restyle help`"""

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
COMPARED = ("Here are {numbers} side by side at the same scale{close} — {details}. Which one to keep? Say _fav {first}_ "
            "or react ⭐ on its message.")
COMPARE_CLOSE = ", with a close-up of the {what} below"
COMPARE_CAPPED = " (I put {cap} side by side at most: {left} left out.)"
COMPARE_TWO = "Name two different variations to compare, e.g. _#2 vs #3_ or _compare 1 and 4_."
COMPARE_MISSING = "I can't compare {missing}: {why}."
LOOKBOOK = ("Here is the lookbook of this thread's {n} favourite{s} ({numbers}): a PDF with a cover and one page each "
            "(the picture, a close-up, the prompt, seed, look and who picked it), and a ZIP of the full-resolution PNGs.")
NO_FAVORITES_LOOKBOOK = ("A lookbook gathers this thread's favourites, and there are none yet — react ⭐ ❤️ 👍 on a "
                         "variation or say _fav 2_, then say _lookbook_ (or `/restyle lookbook`).")
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
DONE = ("Here are {n} variation{s} ({numbers}): _{prompt}_ on the {what}, from {source}{look}. React ⭐ to keep one, "
        "or say _use {first}_, _try #{first} in {other}_.")
DONE_WAYS = ("Here are {n} variations ({numbers}) of the {what} in {k} colourways — {ways} — from {source}{look}, "
             "{per} each. React ⭐ to keep one, or say _use {first}_.")
WAYS_CAPPED = " ({per} per colourway keeps the {n} colourways within {cap} pictures.)"
SOME_REJECTED = " ({k} candidate{s} came out blank and were dropped.)"
ALL_REJECTED = "All candidates came out blank (the model's output was black or invalid). Try again or rephrase."
BAD_IMAGE = "I couldn't read that file as a photo: {why}"
NOT_AN_IMAGE = "That file isn't an image I can use ({what}). Share a JPEG, PNG or WebP photo."
TOO_LARGE = "That photo is too large: {why}"
TOO_SMALL = "That photo is only {size} pixels: share one at least {side} pixels on each side."
MODEL_BUSY = ("The models are at capacity right now ({why}). Nothing was lost — try again in a minute.")
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
FILES_NOT_POSTED = "I couldn't upload {what} here ({why}). Say it again to retry."
FILE_HIDDEN = ("Slack hides that file from apps (the workspace's message-history limit), so I can't open it. "
               "Share the photo again.")
LOGIN_PAGE = ("Slack answered with a sign-in page instead of the photo — the app probably lacks the `files:read` "
              "scope. Ask a workspace admin to reinstall restyle, then share the photo again.")
UNKNOWN_COMMAND = "I don't know `/restyle {sub}`. Here is what I can do:\n\n"
BATCH_USAGE = ("Usage: `/restyle batch 8 pastel floral skirt` (or `/restyle batch 8` to repeat the last look) — run it "
               "in a channel that has a photo thread.")
VARIATION_HINT = "React ⭐ ❤️ 👍 on this message to keep it."
DONE_STATUS = "Done."

# Team controls (bot/controls.py)
QUOTA_REFUSED = ("You've reached {limit} ({used} of {max} used today), so I haven't generated anything. It resets at "
                 "midnight UTC (in {reset}); an admin can raise it with `/restyle limits`.")
QUOTA_TRIMMED = (" (Only {n} of the {asked} asked for: {limit} has {n} left today; it resets at midnight UTC, in "
                 "{reset}.)")
GPU_REFUSED = ("The team's daily GPU budget is spent ({used} of {max} GPU-seconds today), so I haven't generated "
               "anything. It resets at midnight UTC (in {reset}); an admin can raise it with `/restyle limits`.")
CAP_SETTING = ("`{key}={value}` is above the team's cap of {cap} for {key}. Ask an admin (they can change caps with "
               "`/restyle limits max_{key}=…`).")
CHANNEL_NOT_ALLOWED = ("restyle isn't enabled in this channel, so I won't look at photos or messages here. Ask an admin "
                       "to add it to RESTYLE_CHANNELS, or use one of: {channels}.")
DMS_OFF = "restyle doesn't work in direct messages here (RESTYLE_ALLOW_DMS is off) — share the photo in a team channel."
ADMINS_ONLY = "Only restyle's admins (RESTYLE_ADMINS) can {what}."
LIMITS = "Team limits (— = unlimited):\n{summary}\nAdmins change them with e.g. `/restyle limits user_daily_images=50`."
LIMITS_SET = "Limits updated by <@{user}>: {changes}."
BAD_LIMIT = "I can't set `{item}`: {why}."
USAGE_TITLE = "restyle usage — today and this month (UTC)"
USAGE_CSV = "Usage this month as CSV ({n} generations)."
USAGE_CSV_FAILED = "I couldn't upload the CSV ({why})."
FORGOTTEN = {"retention": ("I've deleted this thread's photo, masks and variations: nothing happened here for {days} "
                           "days (the team's retention, RESTYLE_RETENTION_DAYS). Share the photo again to start anew."),
             "forget": ("This thread's photo, masks and variations are deleted (`/restyle forget`). Share the photo "
                        "again to start anew.")}
FORGET_DENIED = "Only the person who shared this thread's photo, or an admin, can delete it."
FORGET_USAGE = ("There is no photo thread here to delete. Run `/restyle forget` in the channel of the thread (it "
                "deletes the channel's latest one), or say `@restyle forget` in the thread itself.")
