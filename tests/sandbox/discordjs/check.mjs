// Logs in to a MemberSense sandbox with unmodified discord.js 14 and prints one JSON
// object describing what it saw: the READY user, the guild, its members (fetched over
// the gateway with REQUEST_GUILD_MEMBERS), channels and messages (REST), a MESSAGE_CREATE
// dispatch of a message it posts, and the RATE_LIMITED answer to a second member fetch.
//
//   node check.mjs http://127.0.0.1:PORT TOKEN
import { ChannelType, Client, Events, GatewayIntentBits } from 'discord.js';

const [, , baseUrl, token] = process.argv;
if (!baseUrl || !token) {
  console.error('usage: node check.mjs http://HOST:PORT TOKEN');
  process.exit(2);
}

const client = new Client({
  intents: [
    GatewayIntentBits.Guilds,
    GatewayIntentBits.GuildMembers,
    GatewayIntentBits.GuildMessages,
    GatewayIntentBits.MessageContent,
  ],
  // discord.js appends /v10 itself.
  rest: { api: `${baseUrl}/api` },
});

const failTimer = setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 60_000);

client.once(Events.ClientReady, async () => {
  try {
    const guild = client.guilds.cache.first();
    const members = await guild.members.fetch();
    let rateLimited = null;
    try {
      await guild.members.fetch({ time: 10_000 });
      rateLimited = false;
    } catch (error) {
      rateLimited = { name: error.name, retryAfter: error.data?.retry_after ?? null };
    }
    const channels = await guild.channels.fetch();
    const text = channels
      .filter((c) => c?.type === ChannelType.GuildText)
      .sort((a, b) => a.rawPosition - b.rawPosition)
      .first();
    const messages = await text.messages.fetch({ limit: 20 });

    const created = new Promise((resolve) => {
      client.on(Events.MessageCreate, (message) => {
        if (message.author.id === client.user.id) resolve(message);
      });
    });
    const sent = await text.send('hello from discord.js');
    const dispatched = await created;

    const result = {
      user: { id: client.user.id, username: client.user.username, bot: client.user.bot },
      guilds: client.guilds.cache.map((g) => g.id),
      guild: { id: guild.id, name: guild.name, memberCount: guild.memberCount, large: guild.large },
      membersFetched: members.size,
      memberSample: members.first()?.user.username ?? null,
      rateLimited,
      channels: channels.size,
      textChannel: { id: text.id, name: text.name },
      messages: messages.size,
      newestMessage: messages.first() ? { id: messages.first().id, content: messages.first().content } : null,
      sent: { id: sent.id, content: sent.content },
      dispatched: { id: dispatched.id, content: dispatched.content, channelId: dispatched.channelId },
      ping: client.ws.ping,
    };
    console.log(JSON.stringify(result));
    clearTimeout(failTimer);
    await client.destroy();
    process.exit(0);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

client.login(token).catch((error) => {
  console.error(error);
  process.exit(1);
});
